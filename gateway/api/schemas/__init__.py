"""Request and response bodies, one module per resource, named like its router: camelCase JSON,
unknown fields refused (base.py)."""
