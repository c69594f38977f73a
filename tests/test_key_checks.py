"""Issue 17: every `ca add` printed `CryptographyDeprecationWarning: DSA is deprecated` (74 of the suite's
75 warnings): the weak-key check named cryptography's `dsa` classes, which cryptography >= 51 deprecates
on every use. The check stays (a DSA CA is refused), by the key's algorithm OID, with no warning."""

from __future__ import annotations

import warnings
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.utils import CryptographyDeprecationWarning

from pki.ca_upload import CertificateRejected, parse_ca
from pki.certs import key_description, weak_key_reason

from .conftest import ok
from .pki_helpers import Issued, make_ca, make_device_cert, trust


def dsa_ca(directory: Path) -> Issued:
    """A DSA CA: making one is what is deprecated, so only here the warning is let through."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        from cryptography.hazmat.primitives.asymmetric import dsa

        return make_ca(directory, "DSA CA", key=dsa.generate_private_key(2048))  # type: ignore[arg-type]


def test_checking_keys_touches_nothing_deprecated(tmp_path: Path) -> None:
    cas = {
        "EC-secp256r1": make_ca(tmp_path, "EC CA"),
        "EC-secp384r1": make_ca(tmp_path, "EC 384", key=ec.generate_private_key(ec.SECP384R1())),
        "RSA-2048": make_ca(tmp_path, "RSA CA", key=rsa.generate_private_key(65537, 2048)),
    }
    weak = make_ca(tmp_path, "Weak", key=rsa.generate_private_key(65537, 1024))
    dsa = dsa_ca(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        for name, ca in cas.items():
            assert (key_description(ca.cert), weak_key_reason(ca.cert)) == (name, None)
            assert parse_ca(ca.pem).key_algorithm == name
        assert weak_key_reason(weak.cert) == "weak key: RSA 1024 bits (at least 2048 required)"
        assert (key_description(dsa.cert), weak_key_reason(dsa.cert)) == ("DSA", "weak key: DSA is not accepted")
        try:
            parse_ca(dsa.pem)
        except CertificateRejected as exc:
            assert str(exc) == "weak key: DSA is not accepted"
        else:
            raise AssertionError("a DSA CA was accepted")


async def test_ca_add_warns_nothing_and_still_refuses_dsa(api: httpx.AsyncClient, tmp_path: Path) -> None:
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    dsa = dsa_ca(tmp_path)
    ca = make_ca(tmp_path, "Acme Devices CA")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        added = await ok(trust(api, "acme", ca), 201)
        r = await api.post("/v1/tenants/acme/trusted-cas", json={"cert": dsa.pem})
        device = make_device_cert(tmp_path, ca, "kettle-1")
        checked = await ok(api.post("/v1/tenants/acme/trusted-cas/check", json={"cert": device.pem}))
    assert added["keyAlgorithm"] == "EC-secp256r1" and checked["decision"] == "refused"  # unknown, no auto-provisioning
    assert r.status_code == 400 and "DSA is not accepted" in r.text
    assert [str(w.message) for w in caught if issubclass(w.category, CryptographyDeprecationWarning)] == []
