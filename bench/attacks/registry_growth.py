"""What an attack left in the gateway's registry: its file's bytes (with the WAL) and its audit rows,
read from the file itself (read-only), so the same measure works on any version of the gateway."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any


def registry_bytes(server: Any) -> int:
    path = Path(server.info["data_dir"]) / "registry.sqlite3"
    return sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))


def audit_rows(server: Any) -> tuple[int, int]:
    """(audit_log rows, audit_refusals rows; 0 where the table does not exist)."""
    path = Path(server.info["data_dir"]) / "registry.sqlite3"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        entries = int(db.execute("SELECT count(*) FROM audit_log").fetchone()[0])
        try:
            counted = int(db.execute("SELECT count(*) FROM audit_refusals").fetchone()[0])
        except sqlite3.OperationalError:
            counted = 0
    return entries, counted


def mb(size: int) -> str:
    return f"{size / 1e6:+,.1f} MB"
