-- Connectivity events in the same statement as the connection status change (see 0001's triggers),
-- and service accounts: per-tenant credentials with role `service` that read the tenant's events.

CREATE TRIGGER live_session_opened_event AFTER INSERT ON live_sessions BEGIN
    INSERT INTO outbox (tenant_id, subject, payload, created_at)
    VALUES (NEW.tenant_id, 'endpoint/connectivity/connected', json_object(
        'correlationId', lower(hex(randomblob(16))),
        'timestamp', NEW.connected_at,
        'originatorReplicaId', NEW.node,
        'endpoints', json_object(NEW.device_id,
            (SELECT app_version FROM devices WHERE tenant_id = NEW.tenant_id AND id = NEW.device_id))
    ), NEW.connected_at);
END;

CREATE TRIGGER live_session_closed_event AFTER UPDATE OF closed_at ON live_sessions
WHEN OLD.closed_at IS NULL AND NEW.closed_at IS NOT NULL BEGIN
    INSERT INTO outbox (tenant_id, subject, payload, created_at)
    VALUES (NEW.tenant_id, 'endpoint/connectivity/disconnected', json_object(
        'correlationId', lower(hex(randomblob(16))),
        'timestamp', NEW.closed_at,
        'originatorReplicaId', NEW.node,
        'endpoints', json_object(NEW.device_id,
            (SELECT app_version FROM devices WHERE tenant_id = NEW.tenant_id AND id = NEW.device_id)),
        'reason', NEW.close_reason
    ), NEW.closed_at);
END;

CREATE TABLE service_accounts (
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id            TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT;
