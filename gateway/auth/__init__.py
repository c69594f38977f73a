"""Device authentication: one module per credential kind behind one `authenticate` signature."""
