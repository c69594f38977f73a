"""The EPMX whitelist and its app-version rule, as pure functions (tests/test_epmp.py drives them over MQTT)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.kp1.whitelist import (
    EMPTY,
    UNRESTRICTED,
    AppVersionRefused,
    KeyAccess,
    Whitelist,
    WhitelistError,
    load_whitelist,
    parse_whitelist,
)

EXAMPLE = Path(__file__).parent.parent / "config" / "epmx-whitelist.example.yaml"
KETTLE_V2 = KeyAccess({"location": True, "owner": False})


@pytest.fixture(scope="module")
def example() -> Whitelist:
    return load_whitelist(EXAMPLE)


def refusal(wl: Whitelist, tenant: str, current: str | None, requested: str) -> AppVersionRefused:
    with pytest.raises(AppVersionRefused) as caught:
        wl.admit(tenant, current, requested)
    return caught.value


def test_the_example_file(example: Whitelist) -> None:
    assert example.configured
    assert {name: (v.application, v.rank) for name, v in example.versions.items()} == {
        "kettle_v1": ("smart_kettle", 0),
        "kettle_v2": ("smart_kettle", 1),
        "kettle_v3": ("smart_kettle", 2),
        "coffee_v1": ("coffee_machine", 0),
        "coffee_v2": ("coffee_machine", 1),
    }
    assert example.changes == {"smart_kettle": "forward", "coffee_machine": "none"}
    assert example.versions["kettle_v2"].access == KETTLE_V2
    assert example.versions["kettle_v3"].access == UNRESTRICTED
    assert example.default_for("acme") == KETTLE_V2
    assert example.default_for("globex") == KeyAccess({"location": True})


@pytest.mark.parametrize(
    ("this", "other", "looser"),
    [
        (UNRESTRICTED, UNRESTRICTED, False),
        (UNRESTRICTED, KETTLE_V2, True),
        (KETTLE_V2, UNRESTRICTED, False),
        (KETTLE_V2, KETTLE_V2, False),
        (KeyAccess({}), KeyAccess({}), False),
        (KeyAccess({"location": False}), KETTLE_V2, False),  # stricter: read-only where the other writes
        (KeyAccess({"owner": True}), KETTLE_V2, True),  # writes what the other only reads
        (KeyAccess({"secret": False}), KETTLE_V2, True),  # reads what the other cannot see
        (KETTLE_V2, KeyAccess({"location": True}), True),
        (KeyAccess({}), KETTLE_V2, False),
    ],
)
def test_looser_means_reading_or_writing_a_key_the_other_does_not(
    this: KeyAccess, other: KeyAccess, looser: bool
) -> None:
    assert this.looser_than(other) is looser


@pytest.mark.parametrize(
    ("current", "requested", "access"),
    [
        ("kettle_v2", "kettle_v2", KETTLE_V2),  # no move
        ("kettle_v1", "kettle_v2", KETTLE_V2),  # the next version
        ("kettle_v1", "kettle_v3", UNRESTRICTED),  # any later one, not only the next
        ("kettle_v2", "kettle_v3", UNRESTRICTED),
        ("coffee_v1", "coffee_v1", KeyAccess({"location": False})),
        (None, "kettle_v2", KETTLE_V2),  # equal to acme's default
        (None, "coffee_v1", KeyAccess({"location": False})),  # stricter; a first claim is not a move
        ("v1", "kettle_v2", KETTLE_V2),  # a version the file does not list counts as none
        ("v1", "v1", KETTLE_V2),  # ... and is served under the default
    ],
)
def test_admitted(example: Whitelist, current: str | None, requested: str, access: KeyAccess) -> None:
    assert example.admit("acme", current, requested) == access


@pytest.mark.parametrize(
    ("current", "requested", "status", "words"),
    [
        ("kettle_v2", "kettle_v1", 403, "older"),  # the downgrade of issue item 4
        ("kettle_v3", "kettle_v2", 403, "older"),
        ("coffee_v1", "coffee_v2", 403, "coffee_machine"),  # `none`
        ("coffee_v2", "coffee_v1", 403, "coffee_machine"),
        ("kettle_v2", "coffee_v2", 404, "another application"),
        ("coffee_v1", "kettle_v3", 404, "another application"),
        ("kettle_v2", "unknown_v9", 404, "unknown"),
        ("kettle_v2", "bad%name", 404, "unknown"),
        (None, "kettle_v1", 403, "default"),  # unrestricted: looser than acme's default
        (None, "kettle_v3", 403, "default"),
        (None, "unknown_v9", 404, "unknown"),
        ("v1", "kettle_v1", 403, "default"),
        ("v1", "v2", 404, "unknown"),
    ],
)
def test_refused(example: Whitelist, current: str | None, requested: str, status: int, words: str) -> None:
    refused = refusal(example, "acme", current, requested)
    assert refused.status == status and words in refused.phrase


def test_a_tenant_default_replaces_the_default(example: Whitelist) -> None:
    assert refusal(example, "globex", None, "kettle_v2").status == 403  # owner is readable there
    assert example.admit("globex", None, "coffee_v1") == KeyAccess({"location": False})
    assert example.admit("globex", "v1", "v1") == KeyAccess({"location": True})


def test_without_a_whitelist_any_valid_name_is_admitted_unrestricted() -> None:
    assert not EMPTY.configured and load_whitelist(None) == EMPTY
    assert EMPTY.admit("acme", "kettle_v2", "kettle_v1") == UNRESTRICTED
    assert EMPTY.admit("acme", None, "anything.v9") == UNRESTRICTED
    assert refusal(EMPTY, "acme", "kettle_v2", "bad%name").status == 404


def test_an_empty_file_is_no_whitelist_but_an_empty_application_list_is_one(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_whitelist(empty) == EMPTY
    wl = parse_whitelist({"applications": {}})
    assert wl.configured and wl.admit("acme", "v1", "v1") == UNRESTRICTED
    assert refusal(wl, "acme", "v1", "v2").status == 404


def test_defaults_are_unrestricted_when_absent() -> None:
    wl = parse_whitelist({"applications": {"app": {"versions": {"v1": {"metadata-keys": {"a": {}}}, "v2": None}}}})
    assert wl.default_for("acme") == UNRESTRICTED and wl.changes == {"app": "forward"}
    assert wl.admit("acme", None, "v2") == UNRESTRICTED
    assert wl.admit("acme", None, "v1") == KeyAccess({"a": True})


def kettle(**app: Any) -> dict[str, Any]:
    return {"applications": {"smart_kettle": {"versions": {"kettle_v1": {}}, **app}}}


@pytest.mark.parametrize(
    ("document", "words"),
    [
        (kettle(**{"app-version-changes": "backward"}), "'app-version-changes' is 'forward' or 'none', not 'backward'"),
        (kettle(**{"app-version-changes": False}), "not False"),  # what an unquoted `no` becomes in YAML
        (kettle(**{"app-version-changes": None}), "not None"),
        (kettle(**{"app-version-change": "none"}), "unknown setting(s) 'app-version-change'"),
        ({**kettle(), "defaults": {}}, "unknown setting(s) 'defaults'"),
        ({**kettle(), "default": {"metadata-keys": ["a"]}}, "'metadata-keys' is a mapping"),
        ({**kettle(), "default": {"keys": {}}}, "default: only 'metadata-keys'"),
        ({**kettle(), "tenant-defaults": ["acme"]}, "'tenant-defaults' is a mapping"),
        ({**kettle(), "tenant-defaults": {"not a tenant": {}}}, "invalid tenant id 'not a tenant'"),
        ({**kettle(), "tenant-defaults": {"acme": {"metadata-keys": {"a b": {}}}}}, "invalid metadata key 'a b'"),
        ({"applications": {"a": {"versions": {"v1": {}}}, "b": {"versions": {"v1": {}}}}}, "two applications"),
        ({"applications": {"a": {"versions": {"v/1": {}}}}}, "invalid app version name 'v/1'"),
        ({"applications": {"a": {"versions": ["v1"]}}}, "needs a 'versions' mapping"),
        ({"applications": {"a": {"versions": {"v1": {"metadata-keys": {"k": {"write-enabled": "false"}}}}}}}, "true"),
        ({"applications": ["a"]}, "top-level 'applications' mapping"),
        ({"default": {}}, "top-level 'applications' mapping"),
        ([], "top-level 'applications' mapping"),
    ],
)
def test_a_broken_whitelist_is_refused_with_a_clear_message(document: Any, words: str) -> None:
    with pytest.raises(WhitelistError) as caught:
        parse_whitelist(document, "wl.yaml")
    assert str(caught.value).startswith("wl.yaml") and words in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "applications:\n  a:\n    versions:\n      v1: {}\n      v2: {}\n      v1: {metadata-keys: {k: {}}}\n",
        "applications:\n  a:\n    versions: {v1: {}}\n  a:\n    versions: {v2: {}}\n",
        "applications:\n  a:\n    versions:\n      v1:\n        metadata-keys: {k: {}, k: {write-enabled: false}}\n",
    ],
)
def test_a_key_given_twice_is_refused(tmp_path: Path, text: str) -> None:
    """PyYAML keeps the last of two equal keys silently; the order of versions is the upgrade path."""
    path = tmp_path / "wl.yaml"
    path.write_text(text)
    with pytest.raises(WhitelistError, match="duplicate key"):
        load_whitelist(path)


def test_yaml_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    path = tmp_path / "wl.yaml"
    path.write_text(
        "applications:\n  a:\n    versions:\n      v1: &ro {metadata-keys: {k: {write-enabled: false}}}\n"
        "      v2: *ro\n"
        "      v3:\n        <<: *ro\n"
    )
    wl = load_whitelist(path)
    assert [wl.versions[v].access for v in ("v1", "v2", "v3")] == [KeyAccess({"k": False})] * 3


def test_unreadable_or_malformed_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(WhitelistError, match=r"missing\.yaml"):
        load_whitelist(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("applications: [broken")
    with pytest.raises(WhitelistError, match=r"broken\.yaml"):
        load_whitelist(broken)


def test_the_loader_stays_safe(tmp_path: Path) -> None:
    path = tmp_path / "wl.yaml"
    path.write_text("applications: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(WhitelistError, match="could not determine a constructor"):
        load_whitelist(path)
