-- Issue 17 point 6: a tenant's own retained-message budget on a node (NULL: its share of the node's
-- max_retained_messages / max_retained_bytes, the `tenant_retained_share` setting).
ALTER TABLE tenants ADD COLUMN max_retained_messages INTEGER;
ALTER TABLE tenants ADD COLUMN max_retained_bytes INTEGER;
