"""The subscription trie against a plain matcher, and its bookkeeping (pure, no gateway)."""

from __future__ import annotations

import random

import pytest

from gateway.mqtt.subscriptions import SubscriptionIndex, TenantSubscriptions, topic_matches, valid_filter


def _naive(topic: str, topic_filter: str) -> bool:
    """MQTT 3.1.1 §4.7, written the obvious way."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    t, f = topic.split("/"), topic_filter.split("/")
    if f[-1] == "#":
        prefix = f[:-1]
        return len(t) >= len(prefix) and all(a == "+" or a == b for a, b in zip(prefix, t, strict=False))
    return len(t) == len(f) and all(a == "+" or a == b for a, b in zip(f, t, strict=True))


@pytest.mark.parametrize(
    ("topic", "topic_filter", "expected"),
    [
        ("a/b", "a/#", True),
        ("a", "a/#", True),  # '#' includes the parent level
        ("a/b/c", "a/+/c", True),
        ("a//c", "a/+/c", True),  # an empty level is a level
        ("a/b", "a/b/", False),  # slash-sensitive
        ("$SYS/x", "#", False),
        ("$SYS/x", "+/x", False),
        ("$SYS/x", "$SYS/#", True),
        ("a/b", "+", False),
        ("/a", "+/a", True),
    ],
)
def test_topic_matching_rules(topic: str, topic_filter: str, expected: bool) -> None:
    index = SubscriptionIndex()
    index.add("s", topic_filter, 1)
    assert topic_matches(topic, topic_filter) is expected
    assert bool(list(index.match(topic))) is expected


def test_the_trie_agrees_with_a_plain_matcher_and_prunes_to_nothing() -> None:
    rng = random.Random(7)
    levels = ["a", "b", "", "$x", "c"]

    def name(wild: bool) -> str:
        parts = [rng.choice([*levels, "+"] if wild else levels) for _ in range(rng.randint(1, 4))]
        if wild and rng.random() < 0.3:
            parts.append("#")
        return "/".join(parts)

    index = SubscriptionIndex()
    held: dict[str, dict[str, int]] = {}
    for _ in range(5000):
        key = f"s{rng.randint(0, 20)}"
        topic_filter = name(wild=True)
        if not valid_filter(topic_filter):
            continue
        if rng.random() < 0.6:
            index.add(key, topic_filter, 1)
            held.setdefault(key, {})[topic_filter] = 1
        elif held.get(key, {}).pop(topic_filter, None) is not None:
            assert index.remove(key, topic_filter)
        topic = name(wild=False)
        expected = {(k, f) for k, filters in held.items() for f in filters if _naive(topic, f)}
        assert {(k, f) for k, _q, f in index.match(topic)} == expected, topic
    for key in list(held):
        index.remove_session(key)
    assert len(index) == 0 and index._root.empty()


def test_filter_validity() -> None:
    assert all(valid_filter(f) for f in ("#", "+", "a/+/b", "a/#", "/", "+/+"))
    assert not any(valid_filter(f) for f in ("", "a#", "a/#/b", "a+", "#/a", "a/b#"))


def test_each_tenant_is_a_topic_space_of_its_own() -> None:
    """Issue 17: two tenants' devices may both be named `kettle-1`: a publish matches its own tenant's
    subscriptions only, and a tenant's index goes with its last filter."""
    index = TenantSubscriptions()
    topic_filter = "kp1/v1/app/kettle-1/#"
    index.add("a", "a/kettle-1/c", topic_filter, 1)
    index.add("b", "b/kettle-1/c", topic_filter, 0)
    index.add("b", "b/kettle-1/d", "kp1/v1/app/kettle-1/x", 1)
    assert [k for k, _q, _f in index.match("a", "kp1/v1/app/kettle-1/x")] == ["a/kettle-1/c"]
    assert sorted(k for k, _q, _f in index.match("b", "kp1/v1/app/kettle-1/x")) == ["b/kettle-1/c", "b/kettle-1/d"]
    assert list(index.match("c", "kp1/v1/app/kettle-1/x")) == []
    with pytest.raises(ValueError, match="not of tenant"):  # a session key stays in its tenant
        index.add("a", "b/kettle-1/c", "kp1/v1/app/kettle-1/y", 1)
    assert index.remove_session("b/kettle-1/c") == 1 and index.remove("b/kettle-1/d", "kp1/v1/app/kettle-1/x")
    assert index.tenant_of("b/kettle-1/c") is None and list(index.match("b", "kp1/v1/app/kettle-1/x")) == []
    assert len(index) == 1 and index.filters_of("a/kettle-1/c") == {topic_filter: 1}
    assert index._tenants.keys() == {"a"}  # nothing kept for a tenant without subscriptions
