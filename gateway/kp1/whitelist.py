"""EPMX metadata whitelisting and the app-version rule: Kaa's format plus three settings of ours
(docs/epmp.md, "Whitelisting (EPMX)" and "App versions"):

default:                                 # devices the file has no entry for; absent: unrestricted
  metadata-keys: {location: {}}
tenant-defaults:                         # replaces `default` for the tenants named
  acme: {metadata-keys: null}
applications:
  smart_kettle:
    app-version-changes: forward         # or `none`; absent: forward
    versions:                            # in the order they were registered, oldest first
      kettle_v1: {}                      # no metadata-keys: every key readable and writable
      kettle_v2:
        metadata-keys:
          location: {}                   # readable and writable
          owner: {write-enabled: false}  # read-only

No gateway and no registry here (only reading the file is I/O): `Whitelist.admit` is the one place
that decides which app version a device may use and what it may then read and write.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from registry.identifiers import is_valid_app_version, is_valid_id

KEY_PATTERN = re.compile(r"[a-zA-Z0-9_]+")

FORWARD = "forward"
"""A device may move to a version of its application registered after its own."""
NO_CHANGES = "none"
"""A device stays on its version; only operators change it."""
APP_VERSION_CHANGES = (FORWARD, NO_CHANGES)


class WhitelistError(ValueError):
    pass


class AppVersionRefused(Exception):
    """The device may not use the app version its topic names. `status` is the 10/EPMP status:
    404 when the version does not exist for this device, 403 when a policy forbids it."""

    def __init__(self, status: int, phrase: str) -> None:
        super().__init__(phrase)
        self.status = status
        self.phrase = phrase


@dataclass(frozen=True)
class KeyAccess:
    """None = unrestricted. Otherwise key -> writable; unlisted keys are invisible."""

    keys: Mapping[str, bool] | None = None

    def readable(self, key: str) -> bool:
        return self.keys is None or key in self.keys

    def writable(self, key: str) -> bool:
        return self.keys is None or self.keys.get(key, False)

    def looser_than(self, other: KeyAccess) -> bool:
        """True when this access lets a device read or write some key that `other` does not."""
        if other.keys is None:
            return False
        if self.keys is None:
            return True
        return any(key not in other.keys or (write and not other.keys[key]) for key, write in self.keys.items())


UNRESTRICTED = KeyAccess()


@dataclass(frozen=True)
class ListedVersion:
    application: str
    rank: int
    """Position among its application's versions: registered later = higher."""
    access: KeyAccess


@dataclass(frozen=True)
class Whitelist:
    versions: Mapping[str, ListedVersion]
    """app version name -> where the file lists it"""
    changes: Mapping[str, str] = field(default_factory=dict)
    """application -> its `app-version-changes` setting"""
    default: KeyAccess = UNRESTRICTED
    tenant_defaults: Mapping[str, KeyAccess] = field(default_factory=dict)
    configured: bool = True

    def default_for(self, tenant_id: str) -> KeyAccess:
        """The access of the tenant's devices the file has no entry for."""
        return self.tenant_defaults.get(tenant_id, self.default)

    def admit(self, tenant_id: str, current: str | None, requested: str) -> KeyAccess:
        """The access a request gets when its topic names `requested` and the device is registered with
        `current`; raises AppVersionRefused when the device may not use `requested`. The caller records
        `requested` as the device's app version when it differs from `current`."""
        if not is_valid_app_version(requested):
            raise AppVersionRefused(404, "unknown app version")
        if not self.configured:
            return UNRESTRICTED
        now = self.versions.get(current) if current is not None else None
        if requested == current:
            return now.access if now is not None else self.default_for(tenant_id)
        wanted = self.versions.get(requested)
        if wanted is None:
            raise AppVersionRefused(404, f"unknown app version {requested!r}")
        if now is None:  # no entry for the device: a first claim, held to the default it was served under
            if wanted.access.looser_than(self.default_for(tenant_id)):
                raise AppVersionRefused(
                    403, f"app version {requested!r} allows more than the default for devices without a listed one"
                )
            return wanted.access
        if wanted.application != now.application:
            raise AppVersionRefused(404, f"app version {requested!r} belongs to another application")
        if self.changes.get(now.application, FORWARD) == NO_CHANGES:
            raise AppVersionRefused(403, f"application {now.application!r} does not let devices change app version")
        if wanted.rank < now.rank:
            raise AppVersionRefused(403, f"app version {requested!r} is older than {current!r}: no downgrade")
        return wanted.access


EMPTY = Whitelist({}, configured=False)


def load_whitelist(path: Path | None) -> Whitelist:
    if path is None:
        return EMPTY
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise WhitelistError(f"EPMX whitelist {str(path)!r}: {exc}") from None
    return parse_whitelist(document, str(path))


def parse_whitelist(document: Any, where: str = "whitelist") -> Whitelist:
    if document is None:
        return EMPTY
    if not isinstance(document, dict) or not isinstance(document.get("applications"), dict):
        raise WhitelistError(f"{where}: expected a top-level 'applications' mapping")
    _only(document, {"applications", "default", "tenant-defaults"}, where)
    versions: dict[str, ListedVersion] = {}
    changes: dict[str, str] = {}
    for app, spec in document["applications"].items():
        here = f"{where}: application {app!r}"
        if not isinstance(spec, dict) or not isinstance(spec.get("versions"), dict):
            raise WhitelistError(f"{here} needs a 'versions' mapping")
        _only(spec, {"versions", "app-version-changes"}, here)
        policy = spec.get("app-version-changes", FORWARD)
        if policy not in APP_VERSION_CHANGES:
            raise WhitelistError(f"{here}: 'app-version-changes' is 'forward' or 'none', not {policy!r}")
        changes[str(app)] = policy
        for rank, (version, vspec) in enumerate(spec["versions"].items()):
            name = str(version)
            if not is_valid_app_version(name):
                raise WhitelistError(f"{here}: invalid app version name {version!r}")
            if name in versions:
                raise WhitelistError(f"{where}: app version {name!r} appears in two applications")
            versions[name] = ListedVersion(str(app), rank, _access(vspec, f"{where}: {app}/{name}"))
    tenants = document.get("tenant-defaults") or {}
    if not isinstance(tenants, dict):
        raise WhitelistError(f"{where}: 'tenant-defaults' is a mapping of tenant -> {{metadata-keys: ...}}")
    for tenant in tenants:
        if not is_valid_id(str(tenant)):
            raise WhitelistError(f"{where}: tenant-defaults: invalid tenant id {tenant!r}")
    return Whitelist(
        versions,
        changes,
        _access(document.get("default"), f"{where}: default"),
        {str(t): _access(spec, f"{where}: tenant-defaults/{t}") for t, spec in tenants.items()},
    )


def _only(spec: dict[Any, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in spec if k not in allowed)
    if unknown:
        raise WhitelistError(f"{where}: unknown setting(s) {', '.join(map(repr, unknown))}")


def _access(spec: Any, where: str) -> KeyAccess:
    if spec is None or spec == {}:
        return UNRESTRICTED
    if not isinstance(spec, dict) or set(spec) - {"metadata-keys"}:
        raise WhitelistError(f"{where}: only 'metadata-keys' may be set")
    keys = spec.get("metadata-keys")
    if keys is None:
        return UNRESTRICTED
    if not isinstance(keys, dict):
        raise WhitelistError(f"{where}: 'metadata-keys' is a mapping of key -> options")
    access: dict[str, bool] = {}
    for key, options in keys.items():
        if not KEY_PATTERN.fullmatch(str(key)):
            raise WhitelistError(f"{where}: invalid metadata key {key!r}")
        options = options or {}
        if not isinstance(options, dict) or set(options) - {"write-enabled"}:
            raise WhitelistError(f"{where}: key {key!r} takes only 'write-enabled'")
        writable = options.get("write-enabled", True)
        if not isinstance(writable, bool):
            raise WhitelistError(f"{where}: key {key!r}: 'write-enabled' is true or false, not {writable!r}")
        access[str(key)] = writable
    return KeyAccess(access)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping: PyYAML would keep the last one
    silently, and here the order and the content of versions decide what a device may do."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable: construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=True)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)
