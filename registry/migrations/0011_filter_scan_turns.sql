-- Endpoint filters' first scans take turns, a chunk each: the one scanned longest ago goes next, so
-- one tenant's costly (or repeatedly replaced) filter cannot keep another tenant's pending for ever.
ALTER TABLE endpoint_filters ADD COLUMN scanned_at INTEGER NOT NULL DEFAULT 0;
DROP INDEX endpoint_filters_pending;
CREATE INDEX endpoint_filters_pending ON endpoint_filters(scanned_at, created_at) WHERE state = 'pending';
