-- Trusted CAs per tenant, X.509 credentials, tombstones of deleted auto-provisioned devices, event outbox.
CREATE TABLE trusted_cas (
    id                           TEXT PRIMARY KEY,
    tenant_id                    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    spki_sha256                  TEXT NOT NULL,
    cert_sha256                  TEXT NOT NULL,
    subject_dn                   TEXT NOT NULL,
    pem                          TEXT NOT NULL,
    key_algorithm                TEXT NOT NULL,
    not_before                   INTEGER NOT NULL,
    not_after                    INTEGER NOT NULL,
    enabled                      INTEGER NOT NULL DEFAULT 1,
    auto_provisioning_enabled    INTEGER NOT NULL DEFAULT 0,
    device_id_template           TEXT NOT NULL,
    auth_id_template             TEXT NOT NULL,
    grp                          TEXT NOT NULL DEFAULT 'default',
    app_version                  TEXT,
    provisioning_rate_per_minute INTEGER,
    created_at                   INTEGER NOT NULL,
    updated_at                   INTEGER NOT NULL
) STRICT;
-- A CA (its key) belongs to exactly one tenant.
CREATE UNIQUE INDEX trusted_cas_spki ON trusted_cas(spki_sha256);
CREATE INDEX trusted_cas_tenant ON trusted_cas(tenant_id);

-- X.509 credentials: auth_id is the certificate's SHA-256 fingerprint; label the auth-id template's result.
ALTER TABLE credentials ADD COLUMN ca_id TEXT;
ALTER TABLE credentials ADD COLUMN label TEXT;
CREATE UNIQUE INDEX credentials_x509 ON credentials(auth_id) WHERE kind = 'x509';
CREATE INDEX credentials_ca ON credentials(ca_id) WHERE ca_id IS NOT NULL;

-- Deleting an auto-provisioned device remembers its certificates, so they are refused instead of
-- silently provisioned again, until an operator clears the tombstone.
CREATE TABLE tombstones (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    ca_id       TEXT,
    deleted_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, fingerprint)
) STRICT;

-- Events written in the same transaction as the change they describe; delivered at least once.
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT NOT NULL,
    subject      TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    published_at INTEGER
) STRICT;
CREATE INDEX outbox_unpublished ON outbox(id) WHERE published_at IS NULL;
