"""Issue 11 point 4: TLS for real deployments. Your own server certificate (checked; re-read on SIGHUP
without dropping sessions), the development certificate's names, TLS on the API port, and
`pki server-cert`. The non-loopback name is verified by the real mosquitto_pub."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import aiomqtt
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.node.config_check import certificate_warning
from gateway.node.runtime import Gateway
from pki.devca import create_ca, issue_server_cert
from pki.server_cert import ServerCertificateError

from .conftest import make_device, ok, served_gateway, test_settings, wait_until

NAME = "devices.example.net"


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _server_pki(directory: Path, names: list[str], tag: str = "") -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key) of a fresh CA and a server certificate for `names`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = create_ca(f"Operator CA {tag}")
    cert, key = issue_server_cert(ca_cert, ca_key, names)
    paths = directory / f"ca{tag}.pem", directory / f"server{tag}.pem", directory / f"server{tag}.key"
    paths[0].write_bytes(_pem(ca_cert))
    paths[1].write_bytes(_pem(cert) + _pem(ca_cert))
    paths[2].write_bytes(_key_pem(key))
    return paths


async def _mosquitto_pub(
    host_name: str, port: int, cafile: Path, token: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """mosquitto_pub dialling `host_name`, which resolves to 127.0.0.1 in a private mount namespace
    (its own /etc/hosts): the certificate's name is checked as a device on another host would."""
    assert shutil.which("mosquitto_pub"), "mosquitto_pub is needed (apt-get install mosquitto-clients)"
    assert shutil.which("unshare"), "unshare (util-linux) is needed"
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n127.0.0.1 {NAME}\n")
    pub = (
        f"mosquitto_pub -h {host_name} -p {port} --cafile {cafile} -u {token} -q 1"
        f' -t kp1/v1/epmx/{token}/update/keys/1 -m \'{{"site": "{host_name}"}}\''
    )
    return await asyncio.to_thread(
        subprocess.run,
        ["unshare", "--mount", "sh", "-c", f"mount --bind {hosts} /etc/hosts && {pub}"],
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_your_certificate_for_a_non_loopback_name_is_verified_by_mosquitto_pub(tmp_path: Path) -> None:
    ca, cert, key = _server_pki(tmp_path / "pki", [NAME])
    gw = Gateway(test_settings(tmp_path / "data", tls_cert_file=cert, tls_key_file=key))
    await gw.start()
    try:
        assert gw.tls is not None and gw.tls.ca_path is None and not (tmp_path / "data" / "tls" / "ca.pem").exists()
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gw.ports['api']}", headers={"Authorization": f"Bearer {gw.admin_token}"}
        ) as api:
            token = await make_device(api, "acme", "k1")
            port = gw.ports["mqtts"]
            accepted = await _mosquitto_pub(NAME, port, ca, token, tmp_path)
            assert accepted.returncode == 0, accepted.stderr
            assert (await ok(api.get("/v1/tenants/acme/devices/k1/metadata"))) == {"site": NAME}
            wrong_name = await _mosquitto_pub("localhost", port, ca, token, tmp_path)  # not in the certificate
            assert wrong_name.returncode != 0
            other_ca, _, _ = _server_pki(tmp_path / "other", [NAME], "2")
            wrong_ca = await _mosquitto_pub(NAME, port, other_ca, token, tmp_path)
            assert wrong_ca.returncode != 0
    finally:
        await gw.stop()


def _expired(directory: Path) -> tuple[Path, Path]:
    ca_cert, ca_key = create_ca("Old CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, NAME)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "old.pem").write_bytes(_pem(cert))
    (directory / "old.key").write_bytes(_key_pem(key))
    return directory / "old.pem", directory / "old.key"


@pytest.mark.parametrize("problem", ["missing", "garbage", "other key", "expired", "encrypted key"])
async def test_a_certificate_that_cannot_serve_stops_the_start_with_one_line(tmp_path: Path, problem: str) -> None:
    _, cert, key = _server_pki(tmp_path / "pki", [NAME])
    if problem == "missing":
        key = tmp_path / "nope.key"
    elif problem == "garbage":
        cert.write_text("not a certificate")
    elif problem == "other key":
        _, _, key = _server_pki(tmp_path / "pki", [NAME], "2")
    elif problem == "expired":
        cert, key = _expired(tmp_path / "pki")
    else:
        loaded = serialization.load_pem_private_key(key.read_bytes(), None)
        key.write_bytes(
            loaded.private_bytes(  # type: ignore[union-attr]
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
    gw = Gateway(test_settings(tmp_path / "data", tls_cert_file=cert, tls_key_file=key))
    with pytest.raises(ServerCertificateError) as refused:
        await gw.start()
    assert str(refused.value).count("\n") == 0 and len(str(refused.value)) < 300
    r = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", "check-config", "--data-dir", str(tmp_path / "data")],
        env={"GATEWAY_TLS_CERT_FILE": str(cert), "GATEWAY_TLS_KEY_FILE": str(key), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "tls_cert_file" in r.stderr and "Traceback" not in r.stderr, r.stderr
    served = await asyncio.to_thread(  # serve exits with the one line (it used to hang at exit)
        subprocess.run,
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--data-dir",
            str(tmp_path / "data2"),
            "--mqtt-port",
            "0",
            "--mqtts-port",
            "0",
            "--api-port",
            "0",
        ],
        env={"GATEWAY_TLS_CERT_FILE": str(cert), "GATEWAY_TLS_KEY_FILE": str(key), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 1 and "Traceback" not in served.stderr, served.stderr
    assert served.stderr.strip().splitlines()[-1].startswith("mqtt-gateway: ")


def _presented(port: int, cafile: Path, server_name: str) -> bytes:
    """The DER of the certificate a new handshake presents, verified against `cafile` for `server_name`."""
    context = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


async def test_sighup_presents_the_new_certificate_and_keeps_sessions(tmp_path: Path) -> None:
    ca1, cert, key = _server_pki(tmp_path / "pki", [NAME, "localhost"])
    env = {"GATEWAY_TLS_CERT_FILE": str(cert), "GATEWAY_TLS_KEY_FILE": str(key)}
    async with served_gateway(tmp_path / "data", "tls-node", **env) as served:
        port = served.ports["mqtts"]
        first = await asyncio.to_thread(_presented, port, ca1, NAME)
        async with served.api() as api:
            token = await make_device(api, "acme", "k1")
        context = ssl.create_default_context(cafile=str(ca1))
        async with aiomqtt.Client("localhost", port, username=token, tls_context=context, identifier="k1") as device:
            ca2, cert2, key2 = _server_pki(tmp_path / "pki2", [NAME, "localhost"], "2")
            cert.write_bytes(cert2.read_bytes())
            key.write_bytes(key2.read_bytes())
            served.proc.send_signal(signal.SIGHUP)

            async def renewed() -> bool:
                try:
                    return await asyncio.to_thread(_presented, port, ca2, NAME) != first
                except ssl.SSLError:
                    return False

            await wait_until(renewed, timeout=10)
            await device.subscribe(f"kp1/v1/epmx/{token}/get/status")  # the old session still works
            await device.publish(f"kp1/v1/epmx/{token}/get/1", b"", qos=1)
            cert.write_text("broken")  # a bad file on the next SIGHUP: the current certificate stays
            served.proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(1)
            assert await asyncio.to_thread(_presented, port, ca2, NAME)
            await device.publish(f"kp1/v1/epmx/{token}/update/keys/2", b'{"alive": true}', qos=1)
        async with served.api() as api:
            assert (await ok(api.get("/v1/tenants/acme/devices/k1/metadata"))) == {"alive": True}
            log = await ok(api.get("/v1/tenants/acme/devices/k1/connection"))
            assert [e["event"] for e in log["log"]][:2] == ["disconnected", "connected"]  # one session throughout
        served.proc.send_signal(signal.SIGINT)
        _, err = await asyncio.to_thread(served.proc.communicate, None, 20)
    text = err.decode()
    assert "TLS certificate reloaded" in text and "TLS certificate not reloaded, the old one stays" in text
    assert "Traceback" not in text


@pytest.mark.gateway_settings(api_tls=True)
async def test_the_api_port_speaks_tls_with_the_server_certificate(gateway: Gateway) -> None:
    assert gateway.tls is not None and gateway.tls.ca_path is not None
    async with httpx.AsyncClient(
        base_url=f"https://localhost:{gateway.ports['api']}",
        verify=ssl.create_default_context(cafile=str(gateway.tls.ca_path)),
        headers={"Authorization": f"Bearer {gateway.admin_token}"},
    ) as api:
        await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.ports['api']}") as plain:
        with pytest.raises(httpx.HTTPError):
            await plain.get("/healthz")
    ports = json.loads(gateway.settings.ports_path.read_text())
    assert ports["api_tls"] is True
    r = await asyncio.to_thread(
        subprocess.run,
        [
            *(sys.executable, "-W", "error::DeprecationWarning:httpx._config", "-m", "gateway"),  # no verify=<str>
            *("tenant", "list", "--json", "--data-dir", str(gateway.settings.data_dir)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "acme" in r.stdout, r.stderr  # the CLI follows ports.json to https


def _names(cert_path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }


@pytest.mark.gateway_settings(tls_server_names=["localhost", "127.0.0.1", "::1", "gw.example.org", "10.1.2.3"])
async def test_development_certificate_names_and_pki_server_cert(gateway: Gateway) -> None:
    assert gateway.tls is not None and gateway.tls.ca_path is not None
    assert _names(gateway.tls.cert_path) == {"localhost", "127.0.0.1", "::1", "gw.example.org", "10.1.2.3"}
    await asyncio.to_thread(_presented, gateway.ports["mqtts"], gateway.tls.ca_path, "gw.example.org")
    data_dir = str(gateway.settings.data_dir)
    names = ["--name", "gw.example.org", "--name", "10.1.2.3", "--name", "other.example.org"]
    r = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", "pki", "server-cert", *names, "--data-dir", data_dir],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    wanted = {"gw.example.org", "10.1.2.3", "other.example.org", "localhost", "127.0.0.1", "::1"}
    assert _names(gateway.tls.cert_path) == wanted
    with pytest.raises(ssl.SSLCertVerificationError):  # until SIGHUP, handshakes present the old one
        await asyncio.to_thread(_presented, gateway.ports["mqtts"], gateway.tls.ca_path, "other.example.org")
    await gateway.reload_tls()  # what SIGHUP does: the new file covers tls_server_names, so it is used
    await asyncio.to_thread(_presented, gateway.ports["mqtts"], gateway.tls.ca_path, "other.example.org")
    assert _names(gateway.tls.cert_path) == wanted
    await asyncio.to_thread(_presented, gateway.ports["mqtts"], gateway.tls.ca_path, "localhost")  # unaffected
    bad = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "gateway",
            "pki",
            "server-cert",
            "--name",
            "not a name",
            "--data-dir",
            str(gateway.settings.data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_listening_everywhere_warns_unless_the_names_are_given(tmp_path: Path) -> None:
    loopback_only = test_settings(tmp_path, host="0.0.0.0")
    warning = certificate_warning(loopback_only)
    assert warning is not None and "tls_server_names" in warning
    named = test_settings(tmp_path, host="0.0.0.0", tls_server_names=["localhost", "gw.example.org"])
    assert certificate_warning(named) is None
    with pytest.raises(Exception, match="neither a DNS name nor an IP address"):
        test_settings(tmp_path, tls_server_names=["bad name"])
    with pytest.raises(Exception, match="set both or neither"):
        test_settings(tmp_path, tls_cert_file=tmp_path / "c.pem")
