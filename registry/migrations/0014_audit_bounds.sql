-- Issue 17 points 1 and 4: the audit trail is bounded. Writes nobody authenticated, and refused MQTT
-- invocations, are counted per source, actor, status and minute (audit_refusals), not kept a row
-- each; entries are kept apart by origin so that one origin's volume never pushes out the other's.

ALTER TABLE audit_log ADD COLUMN origin TEXT NOT NULL DEFAULT 'api';  -- api: management API, mqtt: invocations
UPDATE audit_log SET origin = 'mqtt' WHERE action LIKE 'MQTT %';
CREATE INDEX audit_log_origin ON audit_log(origin, id);

-- Rows written before the bound: cut to 512 characters, as new ones are.
UPDATE audit_log SET target = substr(target, 1, 512) || '...(' || length(target) || ' chars)'
    WHERE length(target) > 512;
UPDATE audit_log SET tenant_id = substr(tenant_id, 1, 128) WHERE length(tenant_id) > 128;
UPDATE audit_log SET detail = substr(detail, 1, 512) WHERE length(detail) > 512;

CREATE TABLE audit_refusals (
    id        INTEGER PRIMARY KEY,
    minute    INTEGER NOT NULL,   -- ms since the epoch at the start of the minute counted
    source    TEXT NOT NULL,      -- the client address (IPv6: its /64), service:<account>@<tenant>, or (others)
    actor     TEXT NOT NULL,      -- anonymous, anonymous (wrong token), service:<account>@<tenant>, or (others)
    status    INTEGER NOT NULL,
    count     INTEGER NOT NULL,
    tenant_id TEXT,               -- a service account's tenant; never taken from an anonymous request
    action    TEXT NOT NULL,      -- the first one of the minute: what was tried, on what, why it was refused
    target    TEXT NOT NULL,
    detail    TEXT,
    UNIQUE (minute, source, actor, status)
) STRICT;
CREATE INDEX audit_refusals_tenant ON audit_refusals(tenant_id, id);
CREATE INDEX audit_refusals_minute ON audit_refusals(minute);
