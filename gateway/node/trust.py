"""The tenants' trusted CAs as the running gateway sees them: TLS trust, CA settings, rate limits."""

from __future__ import annotations

from pathlib import Path

from pki.certs import load_certificates
from pki.trust import TrustAnchor, TrustStore
from registry import Registry
from registry.models import TrustedCa

from ..auth.ratelimit import TokenBucket


class TrustedCas:
    def __init__(self, registry: Registry, cert_path: Path, key_path: Path) -> None:
        self._registry = registry
        self.store = TrustStore(cert_path, key_path)
        self._cas: dict[str, TrustedCa] = {}
        self._buckets: dict[str, TokenBucket] = {}

    async def reload(self) -> None:
        """Re-reads enabled CAs of enabled tenants; new TLS handshakes see the result at once."""
        cas = await self._registry.trusted_cas.all_enabled()
        self._cas = {ca.id: ca for ca in cas}
        self.store.replace([TrustAnchor(ca.id, ca.tenant_id, load_certificates(ca.pem)[0]) for ca in cas])
        buckets = {}
        for ca in cas:
            rate = ca.provisioning_rate_per_minute
            if rate is None:
                continue
            old = self._buckets.get(ca.id)
            buckets[ca.id] = old if old is not None and old.per_minute == rate else TokenBucket(rate)
        self._buckets = buckets

    def settings_of(self, ca_id: str) -> TrustedCa | None:
        return self._cas.get(ca_id)

    def bucket_of(self, ca_id: str) -> TokenBucket | None:
        return self._buckets.get(ca_id)
