"""The 1/KP topic grammar (gateway/kp1/topic.py), directly: pure, no gateway."""

from __future__ import annotations

import pytest

from gateway.kp1.topic import Kp1Topic, device_may_use, parse

TOKENS = frozenset({"tok"})


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("kp1/v1/epmx/tok/get", Kp1Topic("kp1/v1/epmx/tok/get", "v1", "epmx", "tok", "/get", None)),
        ("kp1/v1/epmx/tok/get/42", Kp1Topic("kp1/v1/epmx/tok/get/42", "v1", "epmx", "tok", "/get", 42)),
        (
            "kp1/v1/epmx/tok/update/keys/2147483647",
            Kp1Topic("kp1/v1/epmx/tok/update/keys/2147483647", "v1", "epmx", "tok", "/update/keys", 2**31 - 1),
        ),
        (
            "kp1/v1/epmx/tok/get/2147483648",
            Kp1Topic("kp1/v1/epmx/tok/get/2147483648", "v1", "epmx", "tok", "/get/2147483648", None),
        ),
        ("kp1/v1/epmx/tok/get/007", Kp1Topic("kp1/v1/epmx/tok/get/007", "v1", "epmx", "tok", "/get/007", None)),
        ("kp1/v1/epmx/tok/get/0", Kp1Topic("kp1/v1/epmx/tok/get/0", "v1", "epmx", "tok", "/get/0", None)),
        ("kp1/v1/epmx/tok", Kp1Topic("kp1/v1/epmx/tok", "v1", "epmx", "tok", "", None)),
        ("kp1/v1/epmx/tok/7", Kp1Topic("kp1/v1/epmx/tok/7", "v1", "epmx", "tok", "", 7)),
        ("kp1/v1/epmx", None),
        ("KP1/v1/epmx/tok/get", None),
        ("other/v1/epmx/tok/get", None),
    ],
)
def test_parse(topic: str, expected: Kp1Topic | None) -> None:
    assert parse(topic) == expected


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("kp1/v1/dcx/tok/x", True),
        ("kp1/v1/dcx/tok/#", True),
        ("kp1/v1/dcx/tok/+/status", True),
        ("kp1/v1/dcx/tok/", True),  # an empty resource level is still below the token
        ("kp1/v1/dcx/tok", False),  # the token itself: no resource
        ("kp1/v1/dcx/other/x", False),
        ("kp1/+/dcx/tok/x", False),
        ("kp1/v1/#", False),
        ("kp1/v1/+/tok/x", False),
        ("kp1/v1/dcx/+/x", False),
        ("kp1//dcx/tok/x", False),
        ("kp1/v1//tok/x", False),
        ("#", False),
        ("$SYS/kp1/v1/dcx/tok/x", False),
    ],
)
def test_device_may_use(topic: str, allowed: bool) -> None:
    assert device_may_use(TOKENS, topic) is allowed
