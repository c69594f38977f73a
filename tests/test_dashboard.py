"""Issue 11.3 in a real browser: Debian's headless chromium driven by Playwright (its own browser
download is never used). Log in, watch a device flip to connected and back as a real MQTT client comes
and goes, without a reload; the device page's log. `DASHBOARD_SCREENSHOT=docs/dashboard.png` also
writes the screenshot the README shows."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from gateway.node.runtime import Gateway

from .conftest import connect_refused, make_device, mqtt, ok
from .pki_helpers import device_tls, make_ca, make_device_cert, trust

try:
    from playwright.async_api import Page, async_playwright, expect
except ImportError:  # a clear failure below, not a skip: CI must run this test
    async_playwright = None

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LIVE = 10_000  # ms a live change may take to show: the page polls every 2 s
HOSTILE = '<script>alert("x")</script>'


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    if async_playwright is None:
        pytest.fail("playwright is not installed: pip install -e '.[test]'")
    if CHROMIUM is None:
        pytest.fail("no chromium on PATH: apt-get install -y chromium (.ci/run installs it)")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 860})
            yield await context.new_page()
        finally:
            await browser.close()


async def fleet(gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path) -> str:
    """A tenant with a few devices, a refusal, an auto-provisioned device; returns kettle-1's token."""
    token = await make_device(api, "acme", "kettle-1", app_version="kettle_v1")
    await make_device(api, "acme", "kettle-2", app_version="kettle_v1")
    await make_device(api, "acme", "lamp-1", app_version="lamp_v2")
    await ok(api.post("/v1/tenants/acme/groups", json={"id": "kitchen"}), 201)
    for device in ("kettle-1", "kettle-2"):
        await ok(api.patch(f"/v1/tenants/acme/devices/{device}", json={"group": "kitchen"}))
    await ok(api.put("/v1/tenants/acme/devices/kettle-1/metadata", json={"location": "kitchen", "label": HOSTILE}))
    old = "old-lamp-token-Qw8Zr2Lk5Tm"  # a chosen token must be strong (issue 17)
    await ok(api.post("/v1/tenants/acme/devices/lamp-1/tokens", json={"token": old}), 201)
    await ok(api.patch(f"/v1/tenants/acme/devices/lamp-1/tokens/{old}", json={"state": "suspended"}))
    await connect_refused(gateway, old)
    ca = make_ca(tmp_path, "Acme Devices CA")
    await ok(trust(api, "acme", ca, autoProvisioningEnabled=True, group="kitchen", appVersion="kettle_v1"), 201)
    cert = make_device_cert(tmp_path, ca, "kettle-42")
    async with aiomqtt.Client("localhost", gateway.ports["mqtts"], tls_context=device_tls(gateway, cert)):
        pass
    return token


async def test_a_device_flips_to_connected_and_back_live(
    gateway: Gateway, api: httpx.AsyncClient, page: Page, tmp_path: Path
) -> None:
    token = await fleet(gateway, api, tmp_path)
    dialogs: list[Any] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog))  # a script smuggled in by a name shows here
    base = f"http://127.0.0.1:{gateway.ports['api']}"

    # nothing without logging in; a wrong token does not do it
    await page.goto(f"{base}/ui/tenants/acme")
    await expect(page).to_have_url(f"{base}/ui/login")
    await page.fill("input[name=token]", "not-the-token")
    await page.click("button[type=submit]")
    await expect(page.locator(".error")).to_have_text("wrong token")
    await page.fill("input[name=token]", gateway.admin_token)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{base}/ui/")
    cookie = next(c for c in await page.context.cookies() if c["name"] == "gateway_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["value"] != gateway.admin_token

    await page.click('tr[data-tenant="acme"] a')
    await expect(page).to_have_url(f"{base}/ui/tenants/acme")
    state = page.locator('tr[data-device="kettle-1"] td.conn')
    await expect(state).to_have_text("not connected")
    await expect(page.locator('tr[data-device="kettle-42"]')).to_contain_text("auto")
    await page.evaluate("window.notReloaded = true")

    async with mqtt(gateway, token, client_id="kettle-1-main"):
        await expect(state).to_have_text("connected", timeout=LIVE)
        await expect(page.locator("#connected-now")).to_have_text("1")
        await expect(page.locator(".cards")).to_contain_text("credential_suspended")
        await expect(page.locator("#live-status")).to_contain_text("live")
        shot = await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    await expect(state).to_have_text("not connected", timeout=LIVE)
    await expect(page.locator("#connected-now")).to_have_text("0")
    assert await page.evaluate("window.notReloaded") is True  # the live region changed, the page stayed
    assert shot.startswith(b"\x89PNG") and len(shot) > 10_000
    if target := os.environ.get("DASHBOARD_SCREENSHOT"):
        Path(target).write_bytes(shot)

    # the device page: its log, its metadata as text
    await page.click('tr[data-device="kettle-1"] a')
    await expect(page).to_have_url(f"{base}/ui/tenants/acme/devices/kettle-1")
    log = page.locator("#connection-log tbody tr")
    await expect(log.first).to_contain_text("disconnected")
    await expect(log.first).to_contain_text("client_disconnect")
    await expect(log.nth(1)).to_contain_text("kettle-1-main")
    await expect(page.locator('tr[data-key="label"] pre')).to_have_text(json.dumps(HOSTILE))
    await expect(page.locator("#device-connected")).to_have_text("not connected")
    async with mqtt(gateway, token, client_id="kettle-1-again"):  # the device page is live too
        await expect(page.locator("#device-connected")).to_have_text("connected", timeout=LIVE)
        await expect(log.first).to_contain_text("kettle-1-again")

    # logging out ends it: the pages send the browser back to the login page
    await page.click("header button")
    await expect(page).to_have_url(f"{base}/ui/login")
    await page.goto(f"{base}/ui/tenants/acme/devices/kettle-1")
    await expect(page).to_have_url(f"{base}/ui/login")
    assert dialogs == []


LINES_OF = """els => els.map(el => {
    const range = document.createRange();
    range.selectNodeContents(el);
    const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
    return [el.textContent.trim(), tops.size];
})"""
TIME_OR_ADDRESS = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC|(\d{1,3}(\.\d{1,3}){3}|\[?[0-9a-f]*:[0-9a-f:.]+\]?)(:\d+)?)$"


async def test_the_device_page_keeps_times_and_addresses_on_one_line_at_1400_px(
    gateway: Gateway, api: httpx.AsyncClient, page: Page, tmp_path: Path
) -> None:
    """Issue 17: at 1400 px the device page's cards were ~230 px wide, so "Last disconnected" left its
    timestamp ~90 px and it wrapped over three lines; so did the address."""
    token = await make_device(api, "acme", "kettle-1", app_version="kettle_v1")
    await ok(api.put("/v1/tenants/acme/devices/kettle-1/metadata", json={"location": "kitchen"}))
    async with mqtt(gateway, token, client_id="kettle-1-before"):
        pass
    base = f"http://127.0.0.1:{gateway.ports['api']}"
    await page.set_viewport_size({"width": 1400, "height": 900})
    await page.goto(f"{base}/ui/login")
    await page.fill("input[name=token]", gateway.admin_token)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{base}/ui/")
    async with mqtt(gateway, token, client_id="kettle-1-now") as device:
        await device.publish(f"kp1/kettle_v1/dcx/{token}/json", b'{"temperature": 21}', qos=1)
        await page.goto(f"{base}/ui/tenants/acme/devices/kettle-1")
        await expect(page.locator("#device-connected")).to_have_text("connected")
        await expect(page.locator("#last-data")).to_contain_text("temperature")
        shot = await page.screenshot(path=str(tmp_path / "device.png"), full_page=True)
        if target := os.environ.get("DASHBOARD_DEVICE_SCREENSHOT"):
            Path(target).write_bytes(shot)
        cells = await page.locator(".cards dd, .cards .when, #connection-log td").evaluate_all(LINES_OF)
    shown = [(text, lines) for text, lines in cells if re.match(TIME_OR_ADDRESS, text)]
    times, addresses = [t for t, _ in shown if t.endswith("UTC")], [t for t, _ in shown if not t.endswith("UTC")]
    assert len(times) == 7 and len(addresses) == 4, shown  # 3 dd, the sample's, 3 log rows; 1 dd, 3 log rows
    assert [(text, lines) for text, lines in cells if lines > 1] == []  # nor anything else in the cards
