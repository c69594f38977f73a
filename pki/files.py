"""Writing secrets to disk: private files are created 0600 from the start, never chmod-ed after, and
never inside a Python package (a source tree or an installed one), where they would ship with the code."""

from __future__ import annotations

import os
from pathlib import Path


class SecretInPackage(ValueError):
    """A private key or token was to be written into a Python package's directory."""


def package_holding(directory: Path) -> Path | None:
    """The Python package (a directory with an `__init__.py`) that `directory` is, or is inside."""
    for candidate in (directory.resolve(), *directory.resolve().parents):
        if (candidate / "__init__.py").is_file():
            return candidate
    return None


def refuse_package(directory: Path, what: str) -> None:
    """Raises SecretInPackage when `directory` is, or is inside, a Python package; `what` names what
    was to go there."""
    package = package_holding(directory)
    if package is not None:
        raise SecretInPackage(
            f"refusing to write {what} inside the Python package {package}: it would ship with the code;"
            " choose a directory outside the source tree"
        )


def write_private(path: Path, data: bytes) -> None:
    refuse_package(path.parent, f"the secret {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
