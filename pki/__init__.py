"""X.509 work on `cryptography`: the only certificate code in the gateway."""
