-- Tenants, devices, credentials, metadata, connection status and log.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    enabled     INTEGER NOT NULL DEFAULT 1,
    max_devices INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE devices (
    tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id               TEXT NOT NULL,
    grp              TEXT NOT NULL DEFAULT 'default',
    app_version      TEXT,
    attributes       TEXT NOT NULL DEFAULT '{}',
    state            TEXT NOT NULL DEFAULT 'registered'
                     CHECK (state IN ('enrolled', 'registered', 'provisioned', 'deleted')),
    enabled          INTEGER NOT NULL DEFAULT 1,
    auto_provisioned INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT;

-- One table for every credential kind. auth_id is the token itself (kind 'token'), the
-- password auth-id (kind 'password') or the certificate fingerprint (kind 'x509', next issue).
CREATE TABLE credentials (
    id           INTEGER PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('token', 'password', 'x509')),
    auth_id      TEXT NOT NULL,
    secret       TEXT,
    state        TEXT NOT NULL CHECK (state IN ('inactive', 'active', 'suspended', 'revoked')),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices(tenant_id, id) ON DELETE CASCADE
) STRICT;
-- Tokens are unique across tenants: CONNECT username = token finds the tenant.
CREATE UNIQUE INDEX credentials_token ON credentials(auth_id) WHERE kind = 'token';
CREATE UNIQUE INDEX credentials_auth_id ON credentials(tenant_id, kind, auth_id);
CREATE INDEX credentials_device ON credentials(tenant_id, device_id);

CREATE TABLE metadata (
    tenant_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (tenant_id, device_id, key),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices(tenant_id, id) ON DELETE CASCADE
) STRICT;

-- Registry-wide knobs the triggers below read (written at start-up from the settings).
CREATE TABLE registry_settings (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;

-- Latest facts per device; "connected" is derived from live_sessions.
CREATE TABLE connection_status (
    tenant_id            TEXT NOT NULL,
    device_id            TEXT NOT NULL,
    last_connected_at    INTEGER,
    last_disconnected_at INTEGER,
    remote_address       TEXT,
    node                 TEXT,
    PRIMARY KEY (tenant_id, device_id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices(tenant_id, id) ON DELETE CASCADE
) STRICT;

CREATE TABLE connection_log (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id      TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    at             INTEGER NOT NULL,
    event          TEXT NOT NULL CHECK (event IN ('connected', 'disconnected')),
    reason         TEXT,
    detail         TEXT,
    client_id      TEXT,
    remote_address TEXT,
    node           TEXT,
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices(tenant_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX connection_log_device ON connection_log(tenant_id, device_id, id);

-- One row per open MQTT session, keyed by the broker's session key; node says who holds it.
-- The CONNECT and disconnect paths each write ONE statement here; the triggers below keep
-- credentials, connection_status and connection_log in step inside that statement, so the hot
-- path costs one round trip to the registry thread and is atomic without BEGIN/COMMIT.
CREATE TABLE live_sessions (
    session_key    TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    credential_id  INTEGER NOT NULL,
    node           TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    remote_address TEXT,
    connected_at   INTEGER NOT NULL,
    closed_at      INTEGER,
    close_reason   TEXT,
    close_detail   TEXT,
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices(tenant_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX live_sessions_device ON live_sessions(tenant_id, device_id);
CREATE INDEX live_sessions_node ON live_sessions(node);

-- A session opened: the credential is used (inactive -> active), the device's status and log follow.
CREATE TRIGGER live_session_opened AFTER INSERT ON live_sessions BEGIN
    UPDATE credentials
       SET last_used_at = NEW.connected_at,
           state = CASE state WHEN 'inactive' THEN 'active' ELSE state END
     WHERE id = NEW.credential_id;
    INSERT INTO connection_status (tenant_id, device_id, last_connected_at, remote_address, node)
    VALUES (NEW.tenant_id, NEW.device_id, NEW.connected_at, NEW.remote_address, NEW.node)
    ON CONFLICT (tenant_id, device_id) DO UPDATE SET
        last_connected_at = excluded.last_connected_at,
        remote_address = excluded.remote_address,
        node = excluded.node;
    INSERT INTO connection_log (tenant_id, device_id, at, event, client_id, remote_address, node)
    VALUES (NEW.tenant_id, NEW.device_id, NEW.connected_at, 'connected', NEW.client_id, NEW.remote_address,
            NEW.node);
END;

-- A session closed (closed_at set): log why, update the status, and the row goes.
CREATE TRIGGER live_session_closed AFTER UPDATE OF closed_at ON live_sessions
WHEN OLD.closed_at IS NULL AND NEW.closed_at IS NOT NULL BEGIN
    UPDATE connection_status SET last_disconnected_at = NEW.closed_at
     WHERE tenant_id = NEW.tenant_id AND device_id = NEW.device_id;
    INSERT INTO connection_log (tenant_id, device_id, at, event, reason, detail, client_id, remote_address, node)
    VALUES (NEW.tenant_id, NEW.device_id, NEW.closed_at, 'disconnected', NEW.close_reason, NEW.close_detail,
            NEW.client_id, NEW.remote_address, NEW.node);
    DELETE FROM live_sessions WHERE session_key = NEW.session_key;
END;

-- The log is bounded per device: keep the newest connection_log_limit rows.
CREATE TRIGGER connection_log_bounded AFTER INSERT ON connection_log BEGIN
    DELETE FROM connection_log
     WHERE tenant_id = NEW.tenant_id AND device_id = NEW.device_id AND id <= (
        SELECT id FROM connection_log
         WHERE tenant_id = NEW.tenant_id AND device_id = NEW.device_id
         ORDER BY id DESC
         LIMIT 1 OFFSET (SELECT coalesce(max(value), 100) FROM registry_settings
                          WHERE key = 'connection_log_limit'));
END;
