"""The CLI's way to the management API: where it is and which token, then one call.

The address is `--url`, else env GATEWAY_URL, else `<data-dir>/ports.json`; the token is `--token`,
else env GATEWAY_TOKEN, else `<data-dir>/admin-token`; the data directory is the command's `--data-dir`,
else the root's, else env GATEWAY_DATA_DIR, else `./gateway-data`. These options may stand before the
command or after it (gateway/cli/root.py); after it, they win. A data directory's token is only ever sent to
the gateway of that directory: with a URL given, the token must be given too. httpx is imported on
the first call, not at start-up (`--help` stays fast).
"""

from __future__ import annotations

import json
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import typer

if TYPE_CHECKING:
    import httpx

TIMEOUT_S = 30.0


class ApiError(Exception):
    pass


@dataclass
class Remote:
    """The common options `--url`, `--token` and `--data-dir` as given before (or, for the first two,
    after) the command, and where the first two came from (for error messages)."""

    url: str | None = None
    token: str | None = None
    url_from: str = "--url"
    token_from: str = "--token"
    data_dir: Path | None = None


remote = Remote()


def set_remote(
    url: str | None, token: str | None, *, url_from: str, token_from: str, data_dir: Path | None = None
) -> None:
    remote.url, remote.token, remote.url_from, remote.token_from = url, token, url_from, token_from
    remote.data_dir = data_dir


def chosen_data_dir(option: Path | None) -> Path | None:
    """The command's --data-dir, else the one given before the command (None: neither)."""
    return option if option is not None else remote.data_dir


def data_dir_of(option: Path | None) -> Path:
    return chosen_data_dir(option) or Path(os.environ.get("GATEWAY_DATA_DIR", "gateway-data"))


def api_path(template: str, *ids: str) -> str:
    """`template`'s `{}` filled with ids, each percent-encoded: a token with `?`, `%` or `&`, or an
    id `..`, stays one path segment. No id the API knows holds a `/`, and the server routes on the
    decoded path, so one given with a `/` is refused here rather than sent to another route."""
    encoded = []
    for value in ids:
        if not value or "/" in value:
            raise fail(f"{value!r} is not an id (empty, or with a '/')", 2)
        quoted = quote(value, safe="")
        encoded.append(quoted.replace(".", "%2E") if set(value) == {"."} else quoted)
    return template.format(*encoded)


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    token: str
    url_from: str
    token_from: str
    ca_file: str | None = None
    """The development CA to check an https API against (a gateway with `api_tls` on this machine)."""


def resolve(data_dir: Path | None) -> Endpoint:
    """Option > env > data directory, for the address and the token alike."""
    if remote.url is not None:
        if remote.token is None:
            raise ApiError(
                f"{remote.url_from} needs a token too: pass --token or set GATEWAY_TOKEN "
                "(a data directory's admin token is only sent to that directory's gateway)"
            )
        return Endpoint(_checked_url(remote.url, remote.url_from), remote.token, remote.url_from, remote.token_from)
    directory = data_dir_of(data_dir)
    ports = _read(directory / "ports.json", directory)
    try:
        parsed = json.loads(ports)
        port = int(parsed["api"])
        host = str(parsed.get("host", "127.0.0.1"))
    except (ValueError, KeyError, TypeError, AttributeError):  # not JSON, not an object, no port
        raise ApiError(f"{directory / 'ports.json'} is not a gateway's ports file") from None
    if host in ("0.0.0.0", "::", ""):  # noqa: S104
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    if remote.token is not None:
        token, token_from = remote.token, remote.token_from
    else:
        token, token_from = _read(directory / "admin-token", directory).strip(), str(directory / "admin-token")
    scheme = "https" if parsed.get("api_tls") else "http"
    ca = directory / "tls" / "ca.pem"
    ca_file = str(ca) if scheme == "https" and ca.exists() else None
    return Endpoint(f"{scheme}://{host}:{port}", token, str(directory / "ports.json"), token_from, ca_file)


def _read(file: Path, directory: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ApiError(
            f"no running gateway found in {directory} ({file} missing): start one with `mqtt-gateway serve`, "
            "or pass --data-dir, or --url and --token (env GATEWAY_URL, GATEWAY_TOKEN)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiError(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}") from None


def _checked_url(url: str, source: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ApiError(f"{source} must be http(s)://HOST[:PORT][/PATH], got {_shown(url)!r}")
    return url.rstrip("/")


def _shown(url: str) -> str:
    """A URL as it may be printed: without a user:password part."""
    return re.sub(r"//[^/@]*@", "//", url)


def one_line(text: str) -> str:
    """What a server said, safe to print: no control characters (a terminal escape), one line."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


class ApiClient:
    def __init__(self, endpoint: Endpoint) -> None:
        import httpx

        if not endpoint.token or any(not (0x21 <= ord(c) <= 0x7E) for c in endpoint.token):
            # never echoed: httpx's own error would print the header, token included
            raise ApiError(
                f"the admin token from {endpoint.token_from} is empty or has characters a header cannot carry"
            )
        self._endpoint = endpoint
        self._http = httpx.Client(
            base_url=endpoint.base_url,
            headers={"Authorization": f"Bearer {endpoint.token}"},
            timeout=TIMEOUT_S,
            # a context, not the path: httpx >= 0.28 deprecates `verify=<str>` (a warning on every call)
            verify=ssl.create_default_context(cafile=endpoint.ca_file) if endpoint.ca_file else True,
        )

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content: bytes | None = None,
        text: bool = False,
        timeout: float = TIMEOUT_S,
    ) -> Any:
        """JSON in and out; `content` sends raw bytes (a CSV), `text` returns the body as text."""
        import httpx

        try:
            if content is not None:
                headers = {"Content-Type": "text/csv"}
                response = self._http.request(method, path, content=content, headers=headers, timeout=timeout)
            else:
                response = self._http.request(method, path, json=body, timeout=timeout)
        except httpx.HTTPError as exc:
            raise ApiError(self._unreachable(exc)) from None
        if response.status_code >= 300:
            raise ApiError(self._refused(response))
        if text:
            return response.text
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                f"{_shown(self._endpoint.base_url)} answered {path} with something other than JSON:"
                f" is {self._endpoint.url_from} the gateway's management API?"
            ) from None

    def _unreachable(self, exc: httpx.HTTPError) -> str:
        reason = one_line(str(exc)) or type(exc).__name__
        where = _shown(self._endpoint.base_url)
        hint = "" if self._endpoint.url_from in ("--url", "GATEWAY_URL") else " (is the gateway running?)"
        return f"cannot reach the gateway API at {where} ({self._endpoint.url_from}): {reason}{hint}"

    def _refused(self, response: httpx.Response) -> str:
        try:
            err = response.json()
            message = str(err.get("message", "")) if isinstance(err, dict) else ""
        except ValueError:
            message = ""
        if response.status_code < 400:
            message = f"redirected to {_shown(response.headers.get('location', '?'))}: is the URL the API's root?"
        elif not message:
            first = response.text.strip().splitlines()[:1]
            message = first[0][:200] if first else response.reason_phrase
        message = one_line(message)
        if response.status_code == 401:
            message += f" (the admin token from {self._endpoint.token_from} was refused)"
        return f"{response.status_code}: {message}"


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `mqtt-gateway: message` on stderr; raise the result to exit with `code`."""
    typer.echo(f"mqtt-gateway: {message}", err=True)
    return typer.Exit(code)


def run(
    data_dir: Path | None,
    method: str,
    path: str,
    body: Any = None,
    *,
    content: bytes | None = None,
    text: bool = False,
    timeout: float = TIMEOUT_S,
) -> Any:
    """One API call; any failure is one line on stderr and exit code 1."""
    try:
        return ApiClient(resolve(data_dir)).call(method, path, body, content=content, text=text, timeout=timeout)
    except ApiError as exc:
        raise fail(str(exc)) from None
