"""Issue 11 point 1: `GET /metrics`, scraped and parsed with prometheus-client's own parser."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.node.runtime import Gateway

from .conftest import api_client, connect_refused, make_device, mqtt, next_json, ok, wait_until
from .pki_helpers import make_ca, make_device_cert
from .test_x509 import ACCEPTED, add_ca, tls_connack

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(api: httpx.AsyncClient) -> Samples:
    r = await api.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_need_the_admin_token(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.ports['api']}") as anonymous:
        r = await anonymous.get("/metrics")
        assert r.status_code == 401 and "gateway_" not in r.text
    async with api_client(gateway, "wrong-token") as wrong:
        assert (await wrong.get("/metrics")).status_code == 401


@pytest.mark.gateway_settings(metrics_public=True)
async def test_metrics_public_opens_metrics_only(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.ports['api']}") as anonymous:
        assert "gateway_uptime_seconds" in (await anonymous.get("/metrics")).text
        assert (await anonymous.get("/v1/metrics")).status_code == 401
        assert (await anonymous.get("/v1/tenants")).status_code == 401


async def test_what_devices_do_shows_in_the_metrics(gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path) -> None:
    before = await scrape(api)
    assert value(before, "gateway_connects_total", outcome="accepted", reason="ok") == 0
    assert value(before, "gateway_uptime_seconds") > 0
    assert value(before, "gateway_info", node="test-node") == 1
    assert value(before, "process_start_time_seconds") > 0  # the process collector
    token = await make_device(api, "acme", "k1", app_version="v1")
    assert await connect_refused(gateway, "no-such-token") == 135  # aiomqtt reports CONNACK 5 as 135
    async with mqtt(gateway, token, client_id="k1") as device:
        await device.subscribe(f"kp1/v1/epmx/{token}/#")
        await device.subscribe(f"kp1/v1/dcx/{token}/#")
        await device.publish(f"kp1/v1/epmx/{token}/update/keys/1", b'{"city": "Kyiv"}', qos=1)
        assert (await next_json(device))[0].endswith("/update/keys/1/status")
        await device.publish(f"kp1/v1/epmx/{token}/update/keys/2", b"{not json", qos=1)
        assert (await next_json(device))[0].endswith("/update/keys/2/error")
        await device.publish(f"kp1/v1/epmx/{token}/get", b"", qos=1)  # no request id: never answered
        await device.publish(f"kp1/v1/dcx/{token}/json/3", b'{"t": 1}', qos=1)
        assert (await next_json(device))[0].endswith("/json/3/status")
        await device.publish(f"kp1/v1/epmx/{token}/ad-hoc-{token}/4", b"{}", qos=1)  # never a label value
        await next_json(device)
        during = await scrape(api)
        assert value(during, "gateway_sessions_connected", tenant="acme") == 1
    ca = make_ca(tmp_path, "Acme CA")
    await add_ca(api, "acme", ca, autoProvisioningEnabled=True, appVersion="v1")
    assert await tls_connack(gateway, make_device_cert(tmp_path, ca, "kettle-42")) == ACCEPTED

    async def counted() -> bool:  # the device said DISCONNECT; the certificate's CONNACK probe just closed
        samples = await scrape(api)
        return sum(v for (name, _), v in samples.items() if name == "gateway_disconnects_total") >= 2

    await wait_until(counted)
    after = await scrape(api)
    assert value(after, "gateway_connects_total", outcome="accepted", reason="ok") == 2
    assert value(after, "gateway_connects_total", outcome="refused", reason="unknown_credential") == 1
    assert value(after, "gateway_disconnects_total", reason="client_disconnect") == 1
    assert value(after, "gateway_auto_provisioned_devices_total") == 1
    requests = {
        (labels["extension"], labels["resource"], labels["status"]): v
        for (name, labels_set), v in after.items()
        if name == "gateway_kp1_requests_total"
        for labels in [dict(labels_set)]
    }
    assert requests == {
        ("epmx", "/update/keys", "200"): 1,
        ("epmx", "/update/keys", "400"): 1,
        ("epmx", "/get", "none"): 1,
        ("epmx", "(unknown)", "404"): 1,
        ("dcx", "/json", "200"): 1,
    }
    assert value(after, "gateway_messages_received_total") >= 5
    assert value(after, "gateway_messages_sent_total") >= 4  # the four answers
    assert value(after, "gateway_received_bytes_total") > value(after, "gateway_messages_received_total")
    assert value(after, "gateway_sessions_connected", tenant="acme") == 0
    assert value(after, "gateway_registry_call_seconds_count", kind="read") > 0
    assert value(after, "gateway_registry_call_seconds_count", kind="transaction") > 0


async def test_event_backlog_and_lag_are_per_consuming_tenant(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await make_device(api, "acme", "k1")  # events, but no consumer: not a backlog
    assert value(await scrape(api), "gateway_event_backlog", tenant="acme") == 0
    await ok(api.post("/v1/tenants/acme/service-accounts", json={"id": "ops"}), 201)
    await ok(api.post("/v1/tenants/acme/devices", json={"id": "k2"}), 201)
    samples = await scrape(api)
    assert value(samples, "gateway_event_backlog", tenant="acme") >= 2
    assert value(samples, "gateway_event_delivery_lag_seconds", tenant="acme") >= 0


async def test_the_grafana_dashboard_reads_metrics_that_exist(gateway: Gateway, api: httpx.AsyncClient) -> None:
    dashboard = json.loads((Path(__file__).parent.parent / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    wanted = {name for expr in exprs for name in re.findall(r"\b((?:gateway|process)_[a-z_]+)\{", expr)}
    await make_device(api, "acme", "k1")  # a tenant with sessions, events and registry calls
    await ok(api.post("/v1/tenants/acme/service-accounts", json={"id": "ops"}), 201)
    token = await make_device(api, "acme", "k2")
    async with mqtt(gateway, token, client_id="k2"):
        text = (await api.get("/metrics")).text
    declared = {f.name for f in text_string_to_metric_families(text)}  # a labelled counter may have no sample yet
    missing = {n for n in wanted if re.sub("_(total|bucket)$", "", n) not in declared}
    assert len(wanted) >= 15 and not missing, sorted(missing)
