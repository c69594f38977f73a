"""The one place that says what a tenant id, device id, endpoint token and auth-id may look like.

Ids use the Kaa endpoint-id alphabet without '.', so every device id is also a valid endpoint
token (auto-provisioning sets token = device id) and can never form an MQTT wildcard, a topic
separator or the '@' that splits `auth-id@tenant` usernames.
"""

from __future__ import annotations

import re
import secrets

ID_PATTERN = r"^[A-Za-z0-9_~-]{1,128}$"
# Kaa forbids + # / . in tokens; we also forbid '@' (username separator), whitespace and controls.
TOKEN_PATTERN = r"^[^+#/.@\s\x00-\x1f\x7f]{1,256}$"
AUTH_ID_PATTERN = r"^[A-Za-z0-9._~-]{1,128}$"
# An app version name is a topic level: literal, no separators or wildcards.
APP_VERSION_PATTERN = r"^[A-Za-z0-9._~-]{1,128}$"

_ID = re.compile(ID_PATTERN)
_APP_VERSION = re.compile(APP_VERSION_PATTERN)
_TOKEN = re.compile(TOKEN_PATTERN)
_AUTH_ID = re.compile(AUTH_ID_PATTERN)


def is_valid_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def is_valid_token(value: str) -> bool:
    return _TOKEN.fullmatch(value) is not None


def is_valid_app_version(value: str) -> bool:
    return _APP_VERSION.fullmatch(value) is not None


def is_valid_auth_id(value: str) -> bool:
    return _AUTH_ID.fullmatch(value) is not None


def generate_token() -> str:
    """192 bits from the OS CSPRNG, URL-safe base64 (only '-' and '_' besides alphanumerics), starting
    with a letter or digit: a token starting with '-' reads as an option on a command line (the CLI
    refused `token set-state acme -Ab... suspended`; about one generated token in 32 did that)."""
    while True:
        token = secrets.token_urlsafe(24)
        if token[0].isalnum():
            return token
