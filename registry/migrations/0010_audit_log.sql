-- Issue 11 point 2: every management API write (and application command invocation) leaves a row:
-- who, what, on what, and how it ended. No foreign key to tenants: the trail outlives a deleted tenant.

CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,   -- admin:<sha256 hint of the admin token>, service:<account>@<tenant>, anonymous
    action    TEXT NOT NULL,   -- the operation: "POST /v1/tenants/{tenant}/devices"
    tenant_id TEXT,
    target    TEXT NOT NULL,   -- the path it was applied to (a token in it shown as its hint)
    status    INTEGER NOT NULL,
    detail    TEXT             -- why it was refused
) STRICT;
CREATE INDEX audit_log_tenant ON audit_log(tenant_id, id);
CREATE INDEX audit_log_at ON audit_log(at);
