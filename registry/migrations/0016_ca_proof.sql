-- Issue 17 point 12: a trusted CA's upload proves its key. Each tenant has a registration code; a
-- verification certificate over it, signed by the CA's key, comes with the upload (pki/ca_proof.py).
CREATE TABLE ca_registration_codes (
    tenant_id  TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    code       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
) STRICT;

-- How the upload proved the key: verified, waived (by the admin, audited), or unproven (uploaded
-- before proofs were required).
ALTER TABLE trusted_cas ADD COLUMN proof TEXT NOT NULL DEFAULT 'unproven'
    CHECK (proof IN ('verified', 'waived', 'unproven'));
