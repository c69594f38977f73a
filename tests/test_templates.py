"""Id templates over a device certificate (pki/templates.py), directly: pure, no gateway."""

from __future__ import annotations

from pathlib import Path

import pytest

from pki.certs import cert_sha256
from pki.templates import DEFAULT_AUTH_ID_TEMPLATE, DEFAULT_DEVICE_ID_TEMPLATE, render, template_error

from .pki_helpers import Issued, make_ca, make_device_cert


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Issued:
    root: Path = tmp_path_factory.mktemp("pki")
    ca = make_ca(root, "Templates CA")
    return make_device_cert(root, ca, "kettle-7", organization="Acme")


def test_the_defaults_name_the_device_by_cn_and_the_credential_by_dn(device: Issued) -> None:
    assert render(DEFAULT_DEVICE_ID_TEMPLATE, device.cert) == "kettle-7"
    assert render(DEFAULT_AUTH_ID_TEMPLATE, device.cert) == "CN=kettle-7,O=Acme"


def test_every_placeholder(device: Issued) -> None:
    assert render("{{subject-o}}-{{subject-cn}}", device.cert) == "Acme-kettle-7"
    assert render("{{serial}}", device.cert) == format(device.cert.serial_number, "x")
    assert render("fp-{{fingerprint}}", device.cert) == "fp-" + cert_sha256(device.cert)
    assert render("{{subject-ou}}", device.cert) == ""  # absent field: empty, the id check refuses it later
    assert render("no placeholders", device.cert) == "no placeholders"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{{subject-cn}}", None),
        ("x-{{serial}}-{{fingerprint}}", None),
        ("", "a template is 1-256 characters"),
        ("x" * 257, "a template is 1-256 characters"),
        ("{{subject-email}}", "unknown placeholder(s): subject-email"),
    ],
)
def test_template_errors(template: str, problem: str | None) -> None:
    error = template_error(template)
    assert (error is None) if problem is None else (error is not None and error.startswith(problem))
