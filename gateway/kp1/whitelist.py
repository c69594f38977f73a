"""EPMX metadata whitelisting per application version, in Kaa's format (see the protocol spec):

applications:
  smart_kettle:
    versions:
      kettle_v1: {}                      # no metadata-keys: every key readable and writable
      kettle_v2:
        metadata-keys:
          location: {}                   # readable and writable
          owner: {write-enabled: false}  # read-only
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KEY_PATTERN = re.compile(r"[a-zA-Z0-9_]+")


class WhitelistError(ValueError):
    pass


@dataclass(frozen=True)
class KeyAccess:
    """None = unrestricted. Otherwise key -> writable; unlisted keys are invisible."""

    keys: dict[str, bool] | None = None

    def readable(self, key: str) -> bool:
        return self.keys is None or key in self.keys

    def writable(self, key: str) -> bool:
        return self.keys is None or self.keys.get(key, False)


UNRESTRICTED = KeyAccess()


@dataclass(frozen=True)
class Whitelist:
    versions: dict[str, tuple[str, KeyAccess]]
    """app version name -> (application, access)"""

    @property
    def configured(self) -> bool:
        return bool(self.versions)

    def application_of(self, app_version: str | None) -> str | None:
        entry = self.versions.get(app_version or "")
        return entry[0] if entry else None

    def access(self, app_version: str) -> KeyAccess:
        entry = self.versions.get(app_version)
        return entry[1] if entry else UNRESTRICTED


EMPTY = Whitelist({})


def load_whitelist(path: Path | None) -> Whitelist:
    if path is None:
        return EMPTY
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise WhitelistError(f"EPMX whitelist {str(path)!r}: {exc}") from None
    return parse_whitelist(document, str(path))


def parse_whitelist(document: Any, where: str = "whitelist") -> Whitelist:
    if document is None:
        return EMPTY
    apps = document.get("applications") if isinstance(document, dict) else None
    if not isinstance(apps, dict):
        raise WhitelistError(f"{where}: expected a top-level 'applications' mapping")
    versions: dict[str, tuple[str, KeyAccess]] = {}
    for app, spec in apps.items():
        app_versions = spec.get("versions") if isinstance(spec, dict) else None
        if not isinstance(app_versions, dict):
            raise WhitelistError(f"{where}: application {app!r} needs a 'versions' mapping")
        for version, vspec in app_versions.items():
            if str(version) in versions:
                raise WhitelistError(f"{where}: app version {version!r} appears in two applications")
            versions[str(version)] = (str(app), _access(vspec, f"{where}: {app}/{version}"))
    return Whitelist(versions)


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
        access[str(key)] = bool(options.get("write-enabled", True))
    return KeyAccess(access)
