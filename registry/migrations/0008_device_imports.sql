-- Issue 10 point 4: batch registration from CSV, as jobs that survive a restart.

CREATE TABLE device_imports (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    state         TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    csv           BLOB,                       -- the upload, kept until the job ends: a restart resumes it
    total         INTEGER NOT NULL,
    next_row      INTEGER NOT NULL DEFAULT 0, -- data rows done; committed with the rows themselves
    created       INTEGER NOT NULL DEFAULT 0,
    unchanged     INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    password_rows INTEGER NOT NULL DEFAULT 0,
    message       TEXT,                       -- why a job failed or was cancelled
    tokens        TEXT NOT NULL DEFAULT 'none' CHECK (tokens IN ('none', 'available', 'downloaded')),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    finished_at   INTEGER
) STRICT;
CREATE INDEX device_imports_tenant ON device_imports(tenant_id, created_at);
CREATE INDEX device_imports_open ON device_imports(created_at) WHERE state IN ('queued', 'running');

CREATE TABLE device_import_errors (
    job_id    TEXT NOT NULL REFERENCES device_imports(id) ON DELETE CASCADE,
    row       INTEGER NOT NULL,
    device_id TEXT,
    message   TEXT NOT NULL
) STRICT;
CREATE INDEX device_import_errors_job ON device_import_errors(job_id, row);

-- Tokens the job generated, until they are downloaded once.
CREATE TABLE device_import_tokens (
    job_id    TEXT NOT NULL REFERENCES device_imports(id) ON DELETE CASCADE,
    row       INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    token     TEXT NOT NULL
) STRICT;
CREATE INDEX device_import_tokens_job ON device_import_tokens(job_id, row);
