-- Issue 10: device groups are entities with a policy (7/CMP configuration); devices keep what they applied.

CREATE TABLE device_groups (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    config      TEXT NOT NULL DEFAULT '{}',   -- the policy: a JSON object, canonical (sorted keys, compact)
    config_id   TEXT NOT NULL,                -- SHA-256 hex of `config`: what devices report as applied
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT;

-- sha256('{}'), the empty policy every group starts with
INSERT INTO device_groups (tenant_id, id, config_id, created_at, updated_at)
SELECT id, 'default', '44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a', created_at, created_at
  FROM tenants;
INSERT OR IGNORE INTO device_groups (tenant_id, id, config_id, created_at, updated_at)
SELECT DISTINCT tenant_id, grp, '44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a',
       CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
  FROM devices;
INSERT OR IGNORE INTO device_groups (tenant_id, id, config_id, created_at, updated_at)
SELECT DISTINCT tenant_id, grp, '44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a',
       CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
  FROM trusted_cas;

CREATE TRIGGER tenants_default_group AFTER INSERT ON tenants BEGIN
    INSERT INTO device_groups (tenant_id, id, config_id, created_at, updated_at)
    VALUES (NEW.id, 'default', '44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a',
            NEW.created_at, NEW.created_at);
END;

-- A device (and a CA's auto-provisioning target) is always in a group of its tenant. The stores
-- check first and say which group; these keep it true whatever writes.
CREATE TRIGGER devices_group_exists BEFORE INSERT ON devices
WHEN NOT EXISTS (SELECT 1 FROM device_groups g WHERE g.tenant_id = NEW.tenant_id AND g.id = NEW.grp)
BEGIN SELECT RAISE(ABORT, 'group not found'); END;
CREATE TRIGGER devices_group_exists_on_move BEFORE UPDATE OF grp ON devices
WHEN NOT EXISTS (SELECT 1 FROM device_groups g WHERE g.tenant_id = NEW.tenant_id AND g.id = NEW.grp)
BEGIN SELECT RAISE(ABORT, 'group not found'); END;
CREATE TRIGGER trusted_cas_group_exists BEFORE INSERT ON trusted_cas
WHEN NOT EXISTS (SELECT 1 FROM device_groups g WHERE g.tenant_id = NEW.tenant_id AND g.id = NEW.grp)
BEGIN SELECT RAISE(ABORT, 'group not found'); END;
CREATE TRIGGER trusted_cas_group_exists_on_update BEFORE UPDATE OF grp ON trusted_cas
WHEN NOT EXISTS (SELECT 1 FROM device_groups g WHERE g.tenant_id = NEW.tenant_id AND g.id = NEW.grp)
BEGIN SELECT RAISE(ABORT, 'group not found'); END;

CREATE INDEX devices_group ON devices(tenant_id, grp);

-- 7/CMP per device: the config id it last applied with a 2xx status, and its last failed apply.
ALTER TABLE devices ADD COLUMN config_applied TEXT;
ALTER TABLE devices ADD COLUMN config_error TEXT;  -- JSON {"configId","statusCode","reasonPhrase","at"}

-- Lifecycle: every state change of a device, kept like its connection log (newest N per device).
CREATE TABLE device_history (
    id        INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    at        INTEGER NOT NULL,
    event     TEXT NOT NULL,
    detail    TEXT NOT NULL DEFAULT '{}',
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices(tenant_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX device_history_device ON device_history(tenant_id, device_id, id);

-- A deleted device leaves its id, group and time: the id can be audited, and reused only on purpose.
CREATE TABLE device_tombstones (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    device_id   TEXT NOT NULL,
    grp         TEXT NOT NULL,
    app_version TEXT,
    deleted_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, device_id)
) STRICT;

-- Devices written before these rules get the state they would have had: no credential means
-- enrolled; nobody has applied a policy yet, so nobody is provisioned (auto-provisioning used to say so).
UPDATE devices SET state = 'enrolled'
 WHERE state <> 'enrolled'
   AND NOT EXISTS (SELECT 1 FROM credentials c WHERE c.tenant_id = devices.tenant_id AND c.device_id = devices.id);
UPDATE devices SET state = 'registered' WHERE state = 'provisioned';
INSERT INTO device_history (tenant_id, device_id, at, event, detail)
SELECT tenant_id, id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), 'created',
       json_object('state', state, 'group', grp, 'migrated', json('true'))
  FROM devices;
