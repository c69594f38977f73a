"""1/KP: the device topic protocol, and its extensions (10/EPMP metadata under `epmx`)."""
