-- Security issue: tokens bound to a certificate, and a per-tenant connection cap.

-- A token made by auto-provisioning (or a bulk import) names its device in kp1 topics but is bound to
-- the device's certificate: a CONNECT with it and no certificate of that device is refused
-- (`certificate_required`). It equals the device id, which is the certificate's CN: public, so it
-- proves nothing on its own. Operator-issued tokens (certificate_bound = 0) stay bearer credentials.
ALTER TABLE credentials ADD COLUMN certificate_bound INTEGER NOT NULL DEFAULT 0;

-- Registries written before this rule: the tokens auto-provisioning made are the device-id tokens of
-- auto-provisioned devices.
UPDATE credentials SET certificate_bound = 1
 WHERE kind = 'token'
   AND auth_id = device_id
   AND EXISTS (SELECT 1 FROM devices d
                WHERE d.tenant_id = credentials.tenant_id AND d.id = credentials.device_id
                  AND d.auto_provisioned = 1);

-- Connected device sessions a tenant may hold at once on a node (NULL: no cap).
ALTER TABLE tenants ADD COLUMN max_connections INTEGER;
