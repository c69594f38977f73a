-- Issue 9: 11/CEP commands, and the 1/KP extensions a tenant forwards to its applications.

-- Extensions (besides dcx) whose device publishes reach the tenant's service accounts, as a JSON array.
ALTER TABLE tenants ADD COLUMN forward_extensions TEXT NOT NULL DEFAULT '[]';

-- A command from an operator (REST) or an application (MQTT) to one device. Outstanding ones
-- (pending: not yet sent; delivered: sent, no result) survive a restart and expire at their deadline.
CREATE TABLE commands (
    tenant_id     TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    type          TEXT NOT NULL,
    id            INTEGER NOT NULL,
    payload       TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'succeeded', 'failed', 'expired')),
    status_code   INTEGER,
    reason_phrase TEXT,
    result        TEXT,
    origin        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    deadline      INTEGER NOT NULL,
    delivered_at  INTEGER,
    completed_at  INTEGER,
    PRIMARY KEY (tenant_id, device_id, type, id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices(tenant_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX commands_due ON commands(deadline) WHERE state IN ('pending', 'delivered');
CREATE INDEX commands_outstanding ON commands(tenant_id, device_id, type) WHERE state IN ('pending', 'delivered');
CREATE INDEX commands_finished ON commands(completed_at) WHERE completed_at IS NOT NULL;

-- The last id given per device id and command type: ids are never reused, not after old commands are
-- pruned, nor when a device is deleted and its id registered again (no foreign key: the row outlives
-- the device; it goes with its tenant).
CREATE TABLE command_sequences (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    type      TEXT NOT NULL,
    last_id   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, device_id, type)
) STRICT;
