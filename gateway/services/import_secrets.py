"""A CSV import's passwords never reach a file. The upload is stored (so a restart resumes the job)
with each password cut out of its cell (`password:<authId>:`) and every row of the wrong width
blanked to `-` (its fields may have split a password); the passwords themselves are held here, in
memory, until the runner hashes them. A restart forgets them: those rows fail, saying so, and the
same file uploaded again creates them (an import is idempotent). What is held, over all jobs, is
bounded by `import_max_held_password_bytes`."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

PASSWORD = "password:"
HELD_ENTRY_BYTES = 128
"""What one held password costs besides its own bytes (the str object, its slot in the dict)."""
FORGOTTEN = "its password was held in memory only and the gateway restarted before it was hashed: import this row again"


@dataclass(slots=True)
class Redaction:
    """Built record by record as the upload is parsed (gateway/services/imports.py `parse`)."""

    text: str
    """The upload, decoded."""
    max_password: int
    credential_at: int | None = None
    cut_at: tuple[int, ...] = ()
    """The columns a password is cut from: the credential, and those whose row errors quote them."""
    held: dict[int, str] = field(default_factory=dict)
    """line -> the password cut out of that row."""
    _out: io.StringIO | None = None
    """The file as stored, once a record had to change (until then, the upload itself)."""
    _kept: int = 0
    _writer: Any = None
    """csv.writer over `_out`."""

    def keep(self, raw: list[str]) -> None:
        if self._out is None:
            self._kept += sum(len(line) for line in raw)
        else:
            self._out.write("".join(raw))

    def record(self, raw: list[str], line: int, record: list[str], width: int) -> None:
        """`raw`: the file's lines this record came from, `record`: its fields."""
        if len(record) != width:
            self._rewrite(raw, ["-"] * len(record))
            return
        fields, changed = list(record), False
        for at in self.cut_at:  # a password shifted into deviceId, group or appVersion: echoed by its row error
            cell, password = _cut(fields[at])
            if password:
                fields[at], changed = cell, True
                if at == self.credential_at and len(password) <= self.max_password:  # a longer one is refused
                    self.held[line] = password
        if changed:
            self._rewrite(raw, fields)
        else:
            self.keep(raw)

    def _rewrite(self, raw: list[str], fields: list[str]) -> None:
        """The record written anew, padded to as many lines as it had: the rows after it keep their
        line numbers (row errors name them)."""
        if self._out is None:
            self._out = io.StringIO()
            self._out.write(self.text[: self._kept])
            self._writer = csv.writer(self._out, lineterminator="\r\n")
        if len(raw) == 1:  # nearly always: a one-line record stays one line
            self._writer.writerow(fields)
            return
        text = io.StringIO()
        csv.writer(text, lineterminator="\r\n").writerow(fields)
        written = text.getvalue()
        self._out.write(written + "\n" * max(0, len(raw) - len(io.StringIO(written, newline="").readlines())))

    def stored(self, original: bytes) -> bytes:
        return original if self._out is None else self._out.getvalue().encode()


class TooManyHeld(Exception):
    """An upload whose passwords would be held past the bound: 413 alone, 429 with others waiting."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _cut(cell: str) -> tuple[str, str]:
    """(`password:<authId>:`, the password) of a password cell; (the cell, "") of any other."""
    stripped = cell.strip()
    if not stripped.startswith(PASSWORD):
        return cell, ""
    auth_id, sep, password = stripped[len(PASSWORD) :].partition(":")
    return (f"{PASSWORD}{auth_id}{sep}", password) if password else (cell, "")


def held_cost(password: str) -> int:
    return len(password.encode()) + HELD_ENTRY_BYTES


class HeldPasswords:
    """Passwords of the jobs this process accepted, by job and line, until hashed or forgotten."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._jobs: dict[str, dict[int, str]] = {}
        self.held_bytes = 0
        """Reserved or held, over all jobs."""

    def reserve(self, cost: int) -> None:
        """Called with no await between it and `attach` or `release`, so two uploads cannot both fit."""
        bound = f"import_max_held_password_bytes ({self._max_bytes:,})"
        if cost > self._max_bytes:
            raise TooManyHeld(
                f"the file's passwords need {cost:,} bytes held until hashed, over {bound}: split it", 413
            )
        if self.held_bytes + cost > self._max_bytes:
            raise TooManyHeld(
                f"passwords of other imports are waiting to be hashed ({self.held_bytes:,} bytes of {bound}):"
                " upload again when they have progressed",
                429,
            )
        self.held_bytes += cost

    def release(self, cost: int) -> None:
        self.held_bytes -= cost

    def attach(self, job_id: str, held: dict[int, str]) -> None:
        """`held` was reserved for (its `Redaction.held_bytes()`)."""
        self._jobs[job_id] = held

    def knows(self, job_id: str) -> bool:
        """False after a restart: the job's passwords were never held by this process."""
        return job_id in self._jobs

    def take(self, job_id: str, line: int) -> str | None:
        password = self._jobs.get(job_id, {}).pop(line, None)
        if password is not None:
            self.held_bytes -= held_cost(password)
        return password

    def forget(self, job_id: str) -> None:
        """The job ended (or was cancelled): what it still held goes."""
        held = self._jobs.pop(job_id, {})
        self.held_bytes -= sum(held_cost(p) for p in held.values())
