"""Operating a node: the audit log, log set-up, counters and their Prometheus view."""
