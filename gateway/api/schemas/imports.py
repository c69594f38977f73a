"""CSV import jobs' bodies (api/imports.py)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from registry.models import ImportJob, ImportRowError, ImportState

from .base import Body


class ImportAccepted(Body):
    job_id: str
    state: ImportState
    total: int


class ImportRowErrorOut(Body):
    row: int
    device_id: str | None
    message: str


class ImportJobOut(Body):
    job_id: str
    state: ImportState
    total: int
    processed: int
    created: int
    unchanged: int
    failed: int
    password_rows: int = Field(description="rows with a password: they run at the argon2 hash rate")
    message: str | None
    tokens: str = Field(description="none | available (GET .../tokens, once) | downloaded")
    errors: list[ImportRowErrorOut]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, job: ImportJob, errors: list[ImportRowError]) -> ImportJobOut:
        return cls(
            job_id=job.id,
            state=job.state,
            total=job.total,
            processed=job.processed,
            created=job.created,
            unchanged=job.unchanged,
            failed=job.failed,
            password_rows=job.password_rows,
            message=job.message,
            tokens=job.tokens,
            errors=[ImportRowErrorOut(row=e.row, device_id=e.device_id, message=e.message) for e in errors],
            created_at=job.created_at,
            updated_at=job.updated_at,
            finished_at=job.finished_at,
        )
