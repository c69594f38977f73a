-- Issue 10 point 6: endpoint filters (Kaa EPR, 18/EFE). A filter's members are kept in a table and
-- changed only for devices that changed: the triggers below note such a device in
-- endpoint_filter_dirty, inside the statement that changed it, and the evaluator
-- (registry/endpoint_filters.py) re-evaluates the noted devices later, off the CONNECT path.

CREATE TABLE endpoint_filters (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id           TEXT NOT NULL,
    query        TEXT NOT NULL,                -- canonical JSON of the query as saved
    state        TEXT NOT NULL CHECK (state IN ('pending', 'active')),
    scan_after   TEXT,                         -- pending: the last device id the first scan has evaluated
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    activated_at INTEGER,
    PRIMARY KEY (tenant_id, id)
) STRICT;
CREATE INDEX endpoint_filters_pending ON endpoint_filters(created_at) WHERE state = 'pending';

CREATE TABLE endpoint_filter_members (
    tenant_id  TEXT NOT NULL,
    filter_id  TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    matched_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, filter_id, device_id),
    FOREIGN KEY (tenant_id, filter_id) REFERENCES endpoint_filters(tenant_id, id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
-- No foreign key to devices: a deleted device must still be found here to be reported unmatched.
CREATE INDEX endpoint_filter_members_device ON endpoint_filter_members(tenant_id, device_id);

-- Devices whose filter membership may have changed, oldest first (seq), each at most once.
CREATE TABLE endpoint_filter_dirty (
    seq       INTEGER PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    UNIQUE (tenant_id, device_id)
) STRICT;
CREATE INDEX endpoint_filter_dirty_tenant ON endpoint_filter_dirty(tenant_id, seq);

-- Only tenants that have a filter pay for a note (one index probe otherwise). NOT EXISTS, not
-- INSERT OR IGNORE: an outer statement's conflict clause (the metadata upsert) overrides a trigger's.
CREATE TRIGGER endpoint_filter_device_created AFTER INSERT ON devices
WHEN EXISTS (SELECT 1 FROM endpoint_filters f WHERE f.tenant_id = NEW.tenant_id) BEGIN
    INSERT INTO endpoint_filter_dirty (tenant_id, device_id) SELECT NEW.tenant_id, NEW.id
     WHERE NOT EXISTS (SELECT 1 FROM endpoint_filter_dirty x WHERE x.tenant_id = NEW.tenant_id AND x.device_id = NEW.id);
END;
CREATE TRIGGER endpoint_filter_device_changed AFTER UPDATE OF grp, state, enabled, attributes, app_version ON devices
WHEN (OLD.grp IS NOT NEW.grp OR OLD.state IS NOT NEW.state OR OLD.enabled IS NOT NEW.enabled
      OR OLD.attributes IS NOT NEW.attributes OR OLD.app_version IS NOT NEW.app_version)
 AND EXISTS (SELECT 1 FROM endpoint_filters f WHERE f.tenant_id = NEW.tenant_id) BEGIN
    INSERT INTO endpoint_filter_dirty (tenant_id, device_id) SELECT NEW.tenant_id, NEW.id
     WHERE NOT EXISTS (SELECT 1 FROM endpoint_filter_dirty x WHERE x.tenant_id = NEW.tenant_id AND x.device_id = NEW.id);
END;
CREATE TRIGGER endpoint_filter_device_deleted AFTER DELETE ON devices
WHEN EXISTS (SELECT 1 FROM endpoint_filters f WHERE f.tenant_id = OLD.tenant_id) BEGIN
    INSERT INTO endpoint_filter_dirty (tenant_id, device_id) SELECT OLD.tenant_id, OLD.id
     WHERE NOT EXISTS (SELECT 1 FROM endpoint_filter_dirty x WHERE x.tenant_id = OLD.tenant_id AND x.device_id = OLD.id);
END;
CREATE TRIGGER endpoint_filter_metadata_added AFTER INSERT ON metadata
WHEN EXISTS (SELECT 1 FROM endpoint_filters f WHERE f.tenant_id = NEW.tenant_id) BEGIN
    INSERT INTO endpoint_filter_dirty (tenant_id, device_id) SELECT NEW.tenant_id, NEW.device_id
     WHERE NOT EXISTS (SELECT 1 FROM endpoint_filter_dirty x WHERE x.tenant_id = NEW.tenant_id AND x.device_id = NEW.device_id);
END;
CREATE TRIGGER endpoint_filter_metadata_changed AFTER UPDATE ON metadata
WHEN EXISTS (SELECT 1 FROM endpoint_filters f WHERE f.tenant_id = NEW.tenant_id) BEGIN
    INSERT INTO endpoint_filter_dirty (tenant_id, device_id) SELECT NEW.tenant_id, NEW.device_id
     WHERE NOT EXISTS (SELECT 1 FROM endpoint_filter_dirty x WHERE x.tenant_id = NEW.tenant_id AND x.device_id = NEW.device_id);
END;
CREATE TRIGGER endpoint_filter_metadata_removed AFTER DELETE ON metadata
WHEN EXISTS (SELECT 1 FROM endpoint_filters f WHERE f.tenant_id = OLD.tenant_id) BEGIN
    INSERT INTO endpoint_filter_dirty (tenant_id, device_id) SELECT OLD.tenant_id, OLD.device_id
     WHERE NOT EXISTS (SELECT 1 FROM endpoint_filter_dirty x WHERE x.tenant_id = OLD.tenant_id AND x.device_id = OLD.device_id);
END;
-- A session opens (INSERT) or closes (0001's trigger deletes its row): "connected" may have changed.
CREATE TRIGGER endpoint_filter_session_opened AFTER INSERT ON live_sessions
WHEN EXISTS (SELECT 1 FROM endpoint_filters f WHERE f.tenant_id = NEW.tenant_id) BEGIN
    INSERT INTO endpoint_filter_dirty (tenant_id, device_id) SELECT NEW.tenant_id, NEW.device_id
     WHERE NOT EXISTS (SELECT 1 FROM endpoint_filter_dirty x WHERE x.tenant_id = NEW.tenant_id AND x.device_id = NEW.device_id);
END;
CREATE TRIGGER endpoint_filter_session_closed AFTER DELETE ON live_sessions
WHEN EXISTS (SELECT 1 FROM endpoint_filters f WHERE f.tenant_id = OLD.tenant_id) BEGIN
    INSERT INTO endpoint_filter_dirty (tenant_id, device_id) SELECT OLD.tenant_id, OLD.device_id
     WHERE NOT EXISTS (SELECT 1 FROM endpoint_filter_dirty x WHERE x.tenant_id = OLD.tenant_id AND x.device_id = OLD.device_id);
END;
