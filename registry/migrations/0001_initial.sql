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

-- One row per open MQTT session, keyed by the broker's session key; node says who holds it.
CREATE TABLE live_sessions (
    session_key    TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    node           TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    remote_address TEXT,
    connected_at   INTEGER NOT NULL,
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices(tenant_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX live_sessions_device ON live_sessions(tenant_id, device_id);
CREATE INDEX live_sessions_node ON live_sessions(node);

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
