-- Events are delivered per tenant (issue 8): each tenant's undelivered events are one index range,
-- read from its start in id order, so a tenant's backlog is never scanned for another tenant.
CREATE INDEX outbox_pending ON outbox(tenant_id, id) WHERE published_at IS NULL;
DROP INDEX outbox_unpublished;
