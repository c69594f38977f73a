"""The CLI's way to the management API: address from ports.json, token from admin-token."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import typer


class ApiError(Exception):
    pass


def data_dir_of(option: Path | None) -> Path:
    return option or Path(os.environ.get("GATEWAY_DATA_DIR", "gateway-data"))


class ApiClient:
    def __init__(self, data_dir: Path) -> None:
        try:
            ports = json.loads((data_dir / "ports.json").read_text())
            token = (data_dir / "admin-token").read_text().strip()
        except FileNotFoundError as exc:
            raise ApiError(
                f"no running gateway found in {data_dir} ({exc.filename} missing): "
                "start one with `mqtt-gateway serve` or pass --data-dir"
            ) from None
        host = ports.get("host", "127.0.0.1")
        if host in ("0.0.0.0", "::"):  # noqa: S104
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if ports.get("api_tls") else "http"
        ca = data_dir / "tls" / "ca.pem"  # the development CA, when the gateway serves its certificate
        ca_file: str | bool = str(ca) if scheme == "https" and ca.exists() else True
        self._http = httpx.Client(
            base_url=f"{scheme}://{host}:{ports['api']}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            verify=ca_file,
        )

    def call(
        self, method: str, path: str, body: Any = None, *, content: bytes | None = None, text: bool = False
    ) -> Any:
        """JSON in and out; `content` sends raw bytes (a CSV), `text` returns the body as text."""
        try:
            if content is not None:
                response = self._http.request(method, path, content=content, headers={"Content-Type": "text/csv"})
            else:
                response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach the gateway API: {exc}") from None
        if response.status_code >= 400:
            try:
                err = response.json()
                message = err.get("message", response.text)
            except ValueError:
                message = response.text
            raise ApiError(f"{response.status_code}: {message}")
        if text:
            return response.text
        return None if response.status_code == 204 or not response.content else response.json()


def run(
    data_dir: Path | None, method: str, path: str, body: Any = None, *, content: bytes | None = None, text: bool = False
) -> Any:
    try:
        return ApiClient(data_dir_of(data_dir)).call(method, path, body, content=content, text=text)
    except ApiError as exc:
        typer.echo(f"mqtt-gateway: {exc}", err=True)
        raise typer.Exit(1) from None
