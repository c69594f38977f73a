"""Issue 17 point 12: uploading a trusted CA needs proof that the uploader holds its key (AWS IoT's
registration code): a verification certificate whose subject CN is the tenant's registration code,
signed by the CA's key. The admin may waive it explicitly, and the audit trail says so."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.node.runtime import Gateway

from .conftest import ok
from .pki_helpers import NOW, make_ca, make_device_cert, registration_code, trust, verification_cert
from .test_cli import cli

CAS = "/v1/tenants/{}/trusted-cas"


async def _tenant(api: httpx.AsyncClient, tenant: str = "acme") -> None:
    await ok(api.post("/v1/tenants", json={"id": tenant}), 201)


async def test_an_upload_without_proof_is_refused_saying_what_to_do(api: httpx.AsyncClient, tmp_path: Path) -> None:
    await _tenant(api)
    r = await api.post(CAS.format("acme"), json={"cert": make_ca(tmp_path, "Acme CA").pem})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["field"] == "verificationCert"
    for what in ("registration-code", "verificationCert", "--key", "waiveProof"):
        assert what in body["message"], body["message"]
    assert await ok(api.get(CAS.format("acme"))) == []


async def test_a_proof_signed_by_another_key_is_refused(api: httpx.AsyncClient, tmp_path: Path) -> None:
    await _tenant(api)
    ca = make_ca(tmp_path, "Acme CA")
    look_alike = make_ca(tmp_path, "Acme CA", key=ec.generate_private_key(ec.SECP256R1()), stem="look-alike")
    forged = verification_cert(look_alike, await registration_code(api, "acme"))  # the same issuer name
    r = await api.post(CAS.format("acme"), json={"cert": ca.pem, "verificationCert": forged})
    assert r.status_code == 422 and r.json()["field"] == "verificationCert", r.text
    assert "not signed by the CA's key" in r.json()["message"]
    assert await ok(api.get(CAS.format("acme"))) == []


async def test_a_proof_over_another_tenants_code_is_refused(api: httpx.AsyncClient, tmp_path: Path) -> None:
    """Globex's root, public, cannot be claimed by acme: acme has no proof for its own code."""
    await _tenant(api, "acme")
    await _tenant(api, "globex")
    root = make_ca(tmp_path, "Globex Root")
    globex_proof = verification_cert(root, await registration_code(api, "globex"))
    assert await registration_code(api, "acme") != await registration_code(api, "globex")
    r = await api.post(CAS.format("acme"), json={"cert": root.pem, "verificationCert": globex_proof})
    assert r.status_code == 422 and r.json()["field"] == "verificationCert", r.text
    assert "registration code of tenant 'acme'" in r.json()["message"]
    assert await ok(api.get(CAS.format("acme"))) == []
    created = await ok(api.post(CAS.format("globex"), json={"cert": root.pem, "verificationCert": globex_proof}), 201)
    assert created["proof"] == "verified"


async def test_a_stale_or_malformed_proof_is_refused(api: httpx.AsyncClient, tmp_path: Path) -> None:
    await _tenant(api)
    ca = make_ca(tmp_path, "Acme CA")
    code = await registration_code(api, "acme")
    cases = {
        "expired": verification_cert(ca, code, at=NOW - dt.timedelta(hours=2)),
        "not valid before": verification_cert(ca, code, at=NOW + dt.timedelta(hours=1)),
        "subject CN": verification_cert(ca, "not-the-code"),
        "one verification certificate": verification_cert(ca, code) + verification_cert(ca, code),
        "the CA itself": ca.pem,
        "neither PEM nor DER": "garbage",
    }
    for expected, proof in cases.items():
        r = await api.post(CAS.format("acme"), json={"cert": ca.pem, "verificationCert": proof})
        assert r.status_code == 422 and expected in r.json()["message"], (expected, r.text)
    both = await api.post(
        CAS.format("acme"), json={"cert": ca.pem, "verificationCert": cases["subject CN"], "waiveProof": True}
    )
    assert both.status_code == 422 and "either" in both.json()["message"]
    assert await ok(api.get(CAS.format("acme"))) == []


async def test_the_code_stays_until_rotated_and_a_removed_ca_cannot_come_back_with_an_old_proof(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    await _tenant(api)
    first = await ok(api.get(CAS.format("acme") + "/registration-code"))
    assert re.fullmatch(r"[0-9a-f]{64}", first["registrationCode"]) and first["createdAt"]
    assert await registration_code(api, "acme") == first["registrationCode"]  # stable: an offline signing may take days
    one, two = make_ca(tmp_path, "One"), make_ca(tmp_path, "Two")
    proof_one = verification_cert(one, first["registrationCode"])
    proof_two = verification_cert(two, first["registrationCode"])
    created = await ok(api.post(CAS.format("acme"), json={"cert": one.pem, "verificationCert": proof_one}), 201)
    await ok(api.post(CAS.format("acme"), json={"cert": two.pem, "verificationCert": proof_two}), 201)  # same code
    await ok(api.delete(CAS.format("acme") + f"/{created['id']}"), 204)  # removing a CA rotates the code
    after_delete = await registration_code(api, "acme")
    assert after_delete != first["registrationCode"]
    again = await api.post(CAS.format("acme"), json={"cert": one.pem, "verificationCert": proof_one})
    assert again.status_code == 422, again.text
    rotated = await ok(api.post(CAS.format("acme") + "/registration-code"))
    assert rotated["registrationCode"] not in (first["registrationCode"], after_delete)
    assert await registration_code(api, "acme") == rotated["registrationCode"]
    assert (await api.get(CAS.format("nope") + "/registration-code")).status_code == 404


async def test_waiving_the_proof_is_the_admins_explicit_choice_and_audited(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await _tenant(api)
    ca = make_ca(tmp_path, "Legacy CA")
    created = await ok(api.post(CAS.format("acme"), json={"cert": ca.pem, "waiveProof": True}), 201)
    assert created["proof"] == "waived"
    entries = (await ok(api.get("/v1/audit", params={"tenant": "acme"})))["entries"]
    (entry,) = [e for e in entries if e["action"] == "POST /v1/tenants/{tenant}/trusted-cas"]
    assert entry["status"] == 201 and entry["actor"].startswith("admin:")
    assert entry["detail"] == f"proof of the CA's key waived: trusted CA {created['id']}"
    logged = [r.getMessage() for r in caplog.records if "event=api_write" in r.getMessage()]
    assert any("proof of the CA's key waived" in line for line in logged), logged
    proven = await trust(api, "acme", make_ca(tmp_path, "Proven CA"))
    assert proven.status_code == 201 and proven.json()["proof"] == "verified"
    entries = (await ok(api.get("/v1/audit", params={"tenant": "acme"})))["entries"]
    assert entries[-1]["detail"] == f"proof of the CA's key verified: trusted CA {proven.json()['id']}"


async def test_the_dry_run_says_whether_the_ca_was_proven(api: httpx.AsyncClient, tmp_path: Path) -> None:
    await _tenant(api)
    proven, waived = make_ca(tmp_path, "Proven CA"), make_ca(tmp_path, "Waived CA")
    assert (await trust(api, "acme", proven, autoProvisioningEnabled=True)).status_code == 201
    await ok(api.post(CAS.format("acme"), json={"cert": waived.pem, "waiveProof": True}), 201)
    for ca, proof in ((proven, "verified"), (waived, "waived")):
        device = make_device_cert(tmp_path, ca, f"dev-{proof}")
        result = await ok(api.post(CAS.format("acme") + "/check", json={"cert": device.pem}))
        assert result["matchedCa"]["proof"] == proof, result
    listed = {c["subjectDn"]: c["proof"] for c in await ok(api.get(CAS.format("acme")))}
    assert listed == {"CN=Proven CA": "verified", "CN=Waived CA": "waived"}


async def test_the_cli_signs_the_proof_locally_or_waives_it(gateway: Gateway, tmp_path: Path) -> None:
    pki_dir = tmp_path / "pki"
    assert (await cli(gateway, "tenant", "create", "acme")).returncode == 0
    assert (await cli(gateway, "pki", "create-ca", str(pki_dir), "--cn", "Acme CA")).returncode == 0
    other = make_ca(tmp_path, "Other")
    bare = await cli(gateway, "ca", "add", "acme", str(pki_dir / "ca.pem"))
    assert bare.returncode == 1 and "--key" in bare.stderr and "--no-proof" in bare.stderr, bare.stderr
    wrong = await cli(gateway, "ca", "add", "acme", str(pki_dir / "ca.pem"), "--key", str(other.key_path))
    assert wrong.returncode == 2 and "is not the key of" in wrong.stderr, wrong.stderr
    both = await cli(
        gateway, "ca", "add", "acme", str(pki_dir / "ca.pem"), "--key", str(pki_dir / "ca.key"), "--no-proof"
    )
    assert both.returncode == 2, both.stderr
    r = await cli(gateway, "ca", "add", "acme", str(pki_dir / "ca.pem"), "--key", str(pki_dir / "ca.key"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["proof"] == "verified"
    assert "PRIVATE KEY" not in repr(await gateway.registry.audit.page(tenant_id="acme"))
    r = await cli(gateway, "ca", "add", "acme", str(other.cert_path), "--no-proof", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["proof"] == "waived", r.stderr
    code = await cli(gateway, "ca", "registration-code", "acme")
    assert code.returncode == 0 and re.fullmatch(r"[0-9a-f]{64}\n", code.stdout)
    rotated = await cli(gateway, "ca", "registration-code", "acme", "--rotate")
    assert rotated.returncode == 0 and rotated.stdout != code.stdout
    # a proof made elsewhere (an HSM, openssl) is given as a file
    third = make_ca(tmp_path, "Third")
    proof = tmp_path / "verification.pem"
    proof.write_text(verification_cert(third, rotated.stdout.strip()))
    r = await cli(gateway, "ca", "add", "acme", str(third.cert_path), "--verification-cert", str(proof), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["proof"] == "verified", r.stderr


def _readme_block(heading: str) -> list[str]:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split(f"\n{heading}\n", 1)[1].split("```sh\n", 1)[1].split("\n```", 1)[0]
    return block.splitlines()


async def test_the_readme_auto_provisioning_walkthrough_works_as_written(gateway: Gateway, tmp_path: Path) -> None:
    """The block, verbatim, in a directory of its own: only the gateway's data directory and ports
    (ephemeral here, so tests can run side by side) are filled in."""
    commands = _readme_block("## Auto-provisioning in 4 commands")
    assert len(commands) == 4
    assert (await cli(gateway, "tenant", "create", "acme")).returncode == 0
    data_dir = gateway.settings.data_dir
    for command in commands:
        args = shlex.split(command)
        if args[0] == "mqtt-gateway":
            where = [] if args[1] == "pki" else ["--data-dir", str(data_dir)]
            args = [sys.executable, "-m", "gateway", *args[1:], *where]
        else:
            assert args[0] == "mosquitto_pub"
            args = [a.replace("gateway-data/", f"{data_dir}/") for a in args]
            args[args.index("-p") + 1] = str(gateway.ports["mqtts"])
        r = await asyncio.to_thread(subprocess.run, args, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (command, r.stdout, r.stderr)
    assert (await gateway.registry.devices.get("acme", "kettle-42")).auto_provisioned
