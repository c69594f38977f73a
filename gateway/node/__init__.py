"""A gateway node: its settings and data directory, the services its parts share, start and stop."""
