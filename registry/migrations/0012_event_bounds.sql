-- Issue 17 point 2: the outbox is bounded per tenant (registry/event_bounds.py has the rules).
--   coalesce_key  events with the same key describe the same thing (kind, device, filter...): over
--                 half the tenant's bound they are folded together, the newest kept ('': rows older
--                 than this migration that name no device, never folded)
--   coalesced     how many earlier events of its key this one stands for (sent as `coalesced`)
--   revision      bumped by an in-place change: a delivery of the older text does not mark it published
ALTER TABLE outbox ADD COLUMN coalesce_key TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN coalesced INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
UPDATE outbox SET coalesce_key = json_array(subject, coalesce(json_extract(payload, '$.endpointId'),
                                 (SELECT key FROM json_each(payload, '$.endpoints') LIMIT 1), ''))
 WHERE published_at IS NULL AND subject LIKE 'endpoint/%';
CREATE INDEX outbox_coalesce ON outbox(tenant_id, coalesce_key, id) WHERE published_at IS NULL;
CREATE INDEX outbox_delivered ON outbox(tenant_id, published_at) WHERE published_at IS NOT NULL;

-- What each tenant's outbox holds, kept by the triggers below in the statement that changes it, so
-- the bound is checked with one row read. An event counts its payload's bytes plus 128 (its row,
-- subject, key and index entries). coalesced_total and dropped_total only grow (the metrics).
CREATE TABLE outbox_usage (
    tenant_id       TEXT PRIMARY KEY,
    events          INTEGER NOT NULL DEFAULT 0,
    bytes           INTEGER NOT NULL DEFAULT 0,
    pending         INTEGER NOT NULL DEFAULT 0,
    pending_bytes   INTEGER NOT NULL DEFAULT 0,
    coalesced_total INTEGER NOT NULL DEFAULT 0,
    dropped_total   INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;
INSERT INTO outbox_usage (tenant_id, events, bytes, pending, pending_bytes)
SELECT tenant_id, count(*), sum(length(CAST(payload AS BLOB)) + 128), sum(published_at IS NULL),
       sum(CASE WHEN published_at IS NULL THEN length(CAST(payload AS BLOB)) + 128 ELSE 0 END)
  FROM outbox GROUP BY tenant_id;

-- No upsert: an outer statement's conflict clause (INSERT OR REPLACE INTO live_sessions) would
-- override the trigger's.
CREATE TRIGGER outbox_usage_insert AFTER INSERT ON outbox BEGIN
    INSERT INTO outbox_usage (tenant_id) SELECT NEW.tenant_id
     WHERE NOT EXISTS (SELECT 1 FROM outbox_usage WHERE tenant_id = NEW.tenant_id);
    UPDATE outbox_usage
       SET events = events + 1,
           bytes = bytes + length(CAST(NEW.payload AS BLOB)) + 128,
           pending = pending + (NEW.published_at IS NULL),
           pending_bytes = pending_bytes
               + CASE WHEN NEW.published_at IS NULL THEN length(CAST(NEW.payload AS BLOB)) + 128 ELSE 0 END
     WHERE tenant_id = NEW.tenant_id;
END;
CREATE TRIGGER outbox_usage_delete AFTER DELETE ON outbox BEGIN
    UPDATE outbox_usage
       SET events = events - 1,
           bytes = bytes - length(CAST(OLD.payload AS BLOB)) - 128,
           pending = pending - (OLD.published_at IS NULL),
           pending_bytes = pending_bytes
               - CASE WHEN OLD.published_at IS NULL THEN length(CAST(OLD.payload AS BLOB)) + 128 ELSE 0 END
     WHERE tenant_id = OLD.tenant_id;
END;
CREATE TRIGGER outbox_usage_update AFTER UPDATE OF payload, published_at ON outbox BEGIN
    UPDATE outbox_usage
       SET bytes = bytes + length(CAST(NEW.payload AS BLOB)) - length(CAST(OLD.payload AS BLOB)),
           pending = pending + (NEW.published_at IS NULL) - (OLD.published_at IS NULL),
           pending_bytes = pending_bytes
               + CASE WHEN NEW.published_at IS NULL THEN length(CAST(NEW.payload AS BLOB)) + 128 ELSE 0 END
               - CASE WHEN OLD.published_at IS NULL THEN length(CAST(OLD.payload AS BLOB)) + 128 ELSE 0 END
     WHERE tenant_id = NEW.tenant_id;
END;

-- Over half the tenant's bound, a new event folds its key's previous newest one into itself when the
-- key has an older one still (which stays): a device connecting in a loop keeps two `connected`
-- events, the first and the newest, however long it goes on. `metadata/updated` is folded by the
-- code that writes it, which merges the changes (registry/event_bounds.py); `events/dropped` is
-- changed in place.
CREATE TRIGGER outbox_coalesce AFTER INSERT ON outbox
WHEN NEW.coalesce_key != '' AND NEW.published_at IS NULL
 AND NEW.subject NOT IN ('endpoint/metadata/updated', 'events/dropped')
 AND (SELECT bytes FROM outbox_usage WHERE tenant_id = NEW.tenant_id)
     > coalesce((SELECT value FROM registry_settings WHERE key = 'event_backlog_max_bytes'), 67108864) / 2
 AND (SELECT count(*) FROM (SELECT 1 FROM outbox WHERE tenant_id = NEW.tenant_id AND coalesce_key = NEW.coalesce_key
                             AND published_at IS NULL AND id < NEW.id LIMIT 2)) = 2
BEGIN
    UPDATE outbox SET coalesced = coalesced + 1 + (
        SELECT p.coalesced FROM outbox p WHERE p.tenant_id = NEW.tenant_id AND p.coalesce_key = NEW.coalesce_key
           AND p.published_at IS NULL AND p.id < NEW.id ORDER BY p.id DESC LIMIT 1)
     WHERE id = NEW.id;
    DELETE FROM outbox WHERE id = (
        SELECT max(id) FROM outbox WHERE tenant_id = NEW.tenant_id AND coalesce_key = NEW.coalesce_key
           AND published_at IS NULL AND id < NEW.id);
    UPDATE outbox_usage SET coalesced_total = coalesced_total + 1 WHERE tenant_id = NEW.tenant_id;
END;

-- Connectivity events as in 0003, with their key: the device.
DROP TRIGGER live_session_opened_event;
DROP TRIGGER live_session_closed_event;
CREATE TRIGGER live_session_opened_event AFTER INSERT ON live_sessions BEGIN
    INSERT INTO outbox (tenant_id, subject, payload, created_at, coalesce_key)
    VALUES (NEW.tenant_id, 'endpoint/connectivity/connected', json_object(
        'correlationId', lower(hex(randomblob(16))),
        'timestamp', NEW.connected_at,
        'originatorReplicaId', NEW.node,
        'endpoints', json_object(NEW.device_id,
            (SELECT app_version FROM devices WHERE tenant_id = NEW.tenant_id AND id = NEW.device_id))
    ), NEW.connected_at, json_array('endpoint/connectivity/connected', NEW.device_id));
END;
CREATE TRIGGER live_session_closed_event AFTER UPDATE OF closed_at ON live_sessions
WHEN OLD.closed_at IS NULL AND NEW.closed_at IS NOT NULL BEGIN
    INSERT INTO outbox (tenant_id, subject, payload, created_at, coalesce_key)
    VALUES (NEW.tenant_id, 'endpoint/connectivity/disconnected', json_object(
        'correlationId', lower(hex(randomblob(16))),
        'timestamp', NEW.closed_at,
        'originatorReplicaId', NEW.node,
        'endpoints', json_object(NEW.device_id,
            (SELECT app_version FROM devices WHERE tenant_id = NEW.tenant_id AND id = NEW.device_id)),
        'reason', NEW.close_reason
    ), NEW.closed_at, json_array('endpoint/connectivity/disconnected', NEW.device_id));
END;

-- A deleted tenant's events have nobody left to read them (its service accounts went with it).
CREATE TRIGGER tenant_deleted_events AFTER DELETE ON tenants BEGIN
    DELETE FROM outbox WHERE tenant_id = OLD.id AND published_at IS NULL;  -- each on its index
    DELETE FROM outbox WHERE tenant_id = OLD.id AND published_at IS NOT NULL;
    DELETE FROM outbox_usage WHERE tenant_id = OLD.id;
END;
