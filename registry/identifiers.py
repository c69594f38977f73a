"""The one place that says what a tenant id, device id, endpoint token and auth-id may look like.

Ids use the Kaa endpoint-id alphabet without '.', so every device id is also a valid endpoint
token (auto-provisioning sets token = device id) and can never form an MQTT wildcard, a topic
separator or the '@' that splits `auth-id@tenant` usernames.

A bearer token (one that authenticates a CONNECT on its own) chosen by an operator must also be
strong (`bearer_token_problem`): a token is globally unique, so a weak one is a guess away from
being somebody's credential, and a refused duplicate would tell the guesser so.
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

BEARER_TOKEN_MIN_LENGTH = 22
"""22 characters of the token alphabet (at least A-Z a-z 0-9 - _ ~) hold 131+ bits when random
(generated tokens: 32 characters, 192 bits)."""
BEARER_TOKEN_MIN_DISTINCT = 10
"""Distinct characters a chosen bearer token needs: `kettle-0000000000000000001` is long and guessable."""
BEARER_TOKEN_RULE = (
    f"at least {BEARER_TOKEN_MIN_LENGTH} characters, at least {BEARER_TOKEN_MIN_DISTINCT} of them"
    " different (or let the gateway generate one)"
)

_ID = re.compile(ID_PATTERN)
_APP_VERSION = re.compile(APP_VERSION_PATTERN)
_TOKEN = re.compile(TOKEN_PATTERN)
_AUTH_ID = re.compile(AUTH_ID_PATTERN)


def is_valid_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def is_valid_token(value: str) -> bool:
    return _TOKEN.fullmatch(value) is not None


def bearer_token_problem(value: str) -> str | None:
    """Why `value` is too weak for a bearer token an operator chose (None: strong enough)."""
    if len(value) < BEARER_TOKEN_MIN_LENGTH or len(set(value)) < BEARER_TOKEN_MIN_DISTINCT:
        return f"a chosen token needs {BEARER_TOKEN_RULE}"
    return None


def is_strong_token(value: str) -> bool:
    return is_valid_token(value) and bearer_token_problem(value) is None


def is_valid_app_version(value: str) -> bool:
    return _APP_VERSION.fullmatch(value) is not None


def is_valid_auth_id(value: str) -> bool:
    return _AUTH_ID.fullmatch(value) is not None


def generate_token() -> str:
    """192 bits from the OS CSPRNG, URL-safe base64 (only '-' and '_' besides alphanumerics), starting
    with a letter or digit: a token starting with '-' reads as an option on a command line (the CLI
    refused `token set-state acme -Ab... suspended`; about one generated token in 32 did that). It meets
    the rule for chosen ones too (fewer than 10 distinct characters in 32 random ones: ~1e-17)."""
    while True:
        token = secrets.token_urlsafe(24)
        if token[0].isalnum() and bearer_token_problem(token) is None:
            return token
