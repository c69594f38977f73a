"""A broker under test in its own process (bench/servers.py), as the load generator sees it: its
ports and credentials, its CPU time and memory, and its end."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent


class Server:
    def __init__(self, kind: str, fleet: int = 0, settings: dict[str, Any] | None = None) -> None:
        """`settings`: gateway settings besides the bench's own (an attack's SETTINGS)."""
        self.kind = kind
        self._dir = tempfile.TemporaryDirectory()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.servers", kind, self._dir.name, str(fleet), json.dumps(settings or {})],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.info: dict[str, Any] = json.loads(self.proc.stdout.readline())
        self.ps = psutil.Process(self.info.get("pid", self.proc.pid))

    def cpu_seconds(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss) / 2**20

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:  # stock amqtt takes minutes to shut down thousands of sessions
            self.proc.kill()
            self.proc.wait(10)
        self._dir.cleanup()
