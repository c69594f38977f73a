-- Issue 17 point 8: a token bound to its device (made by auto-provisioning, an import or a password:
-- certificate_bound = 1) is unique within its tenant only. It names the device in kp1 topics, whose
-- routing is per tenant, and never authenticates a CONNECT, so nothing needs it unique across tenants;
-- a global check told a tenant whether any string was another tenant's live token (`token_taken`).
-- Bearer tokens (certificate_bound = 0) stay unique across tenants: CONNECT username = token finds the
-- tenant. Within a tenant every token still names one device (credentials_auth_id).
DROP INDEX credentials_token;
CREATE UNIQUE INDEX credentials_bearer_token ON credentials(auth_id) WHERE kind = 'token' AND certificate_bound = 0;
CREATE INDEX credentials_bound_token ON credentials(auth_id) WHERE kind = 'token' AND certificate_bound = 1;

-- A password device names itself in topics by its device id (a bound token), as a certificate device
-- does. Devices given a password before this rule get that name now, unless another device of their
-- tenant already holds it as a token (an operator then issues the device a token of its own).
INSERT INTO credentials (tenant_id, device_id, kind, auth_id, state, certificate_bound, created_at, updated_at)
SELECT p.tenant_id, p.device_id, 'token', p.device_id, 'active', 1, min(p.created_at), min(p.created_at)
  FROM credentials p
 WHERE p.kind = 'password'
   AND NOT EXISTS (SELECT 1 FROM credentials t
                    WHERE t.tenant_id = p.tenant_id AND t.kind = 'token' AND t.auth_id = p.device_id)
 GROUP BY p.tenant_id, p.device_id;
