"""The earnings statement and payout onboarding in the web app (``web.payouts``), on real parts:
localstripe (the subscription), the Connect stub (onboarding, transfers), the reference PDS, Debian's
Chromium. A subscriber's paid play becomes earning lines split 80/20 between an artist and a
collaborator whose manager receives their payouts; the artist sets up payouts from the page (off to
Stripe's onboarding and back), is paid, and the statement shows the payout line with its signed
record and the subscription line it covered down to the seconds heard; the manager sees the managed
artist's totals and statement; a statement the viewer may not see, or a month that is not one, is a
clear page."""

from __future__ import annotations

import asyncio

import pytest

from core.publish import publish_profile, record_play
from devkit.demo_payments import card_payment_method
from payments import period
from tests.conftest import eventually
from tests.test_e2e import ok, publish_wav
from tests.test_payments_e2e import call
from tests.test_payouts_e2e import onboard
from tests.test_subscriptions_e2e import stats
from tests.test_web_oauth_browser import browser  # noqa: F401  (a fixture)
from tests.test_web_profile import sign_in

pytestmark = pytest.mark.network
NS = "fm.openmusic.payment."


async def test_statement_payouts_and_manager_view_in_chromium(paid_appview, make_client, localstripe, connect_stub,
                                                              net, browser, tmp_path):  # noqa: F811
    rt = paid_appview
    stub, _ = connect_stub
    artist, collab, manager, fan = (make_client(n) for n in ("stmtartist", "stmtcollab", "stmtmanager", "stmtfan"))
    publish_profile(artist, "Statement Artist", roles=["artist"])
    publish_profile(collab, "Collab", roles=["artist"], extra={"managers": [manager.did], "payoutTo": manager.did})
    publish_profile(manager, "Mgmt", roles=["manager"], extra={"manages": [collab.did]})
    song = publish_wav(artist, tmp_path, 81, "Statement Song", extra={"splits": [
        {"did": artist.did, "shareBps": 8000}, {"did": collab.did, "shareBps": 2000}]})
    await eventually(lambda: ok(rt, "fm.openmusic.catalog.getTrack", uri=song.uri))
    pm = await asyncio.to_thread(card_payment_method, localstripe)
    sub = (await call(rt, fan, NS + "createSubscription", {"tier": "plus", "paymentMethod": pm})).json()
    record_play(fan, song, 2000)
    await eventually(lambda: stats(rt, song.uri), until=lambda s: s == (1, 0))
    month = sub["currentPeriodStart"][:7]
    after = period.iso(int(period.datetime.fromisoformat(sub["currentPeriodEnd"].replace("Z", "+00:00"))
                           .timestamp()) + 60)
    await rt.indexer.transact(period.close_period, month, 3000, rt.payments.broker.salt, after)

    site = type("Site", (), {"url": f"http://127.0.0.1:{rt.settings.port}"})
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await sign_in(page, net, site, artist.handle, tmp_path, "artist")
    await page.goto(f"{site.url}/wallet")
    await page.click("#earnings-link")
    await page.wait_for_url(f"{site.url}/wallet/earnings")
    assert (await page.text_content("#earned")).strip() == "$5.60"
    assert (await page.text_content("#unpaid")).strip() == "$5.60"
    line = (await page.text_content("#lines tbody tr")).split()
    assert "Statement" in line and "2" in line and "$7.00" in line and "$5.60" in line  # 2 s of 2 s x 80 % of $7.00

    # Payouts: the button goes to Stripe's onboarding (the stub) and Stripe sends the person back.
    accounts = len(stub.accounts)
    async with page.expect_response(lambda r: r.url.endswith("/wallet/payouts/setup")) as info:
        await page.click("#payout-setup")
    assert (await info.value).status == 303
    await page.wait_for_url(f"{site.url}/wallet/earnings?onboarded=1")  # Stripe (the stub) sends them back
    assert len(stub.accounts) == accounts + 1
    await onboard(rt, manager)
    assert (await rt.payments.run_payouts())["paid"] == 2
    await page.goto(f"{site.url}/wallet/earnings?onboarded=1")
    assert "Back from Stripe" in await page.text_content("[role=status]")
    assert (await page.text_content("#unpaid")).strip() == "$0.00"
    payout_row = page.locator("#lines tr.line-payout")
    assert await payout_row.count() == 1
    payout_text = await payout_row.text_content()
    assert "-$5.60" in payout_text and "fm.openmusic.payment.payout" in payout_text
    await page.screenshot(path=str(tmp_path / "earnings.png"), full_page=True)
    # a month that is not one, and another artist's statement: clear pages
    assert (await page.goto(f"{site.url}/wallet/earnings?period=2026-13")).status == 400
    refused = await page.goto(f"{site.url}/wallet/earnings?artist={collab.did}")
    assert refused.status == 403 and "only when you manage them" in await page.text_content("main")
    await context.close()

    # The manager: the managed artist's totals, and their statement.
    context = await browser.new_context(viewport={"width": 390, "height": 844})
    page = await context.new_page()
    await sign_in(page, net, site, manager.handle, tmp_path, "manager")
    await page.goto(f"{site.url}/wallet/earnings")
    managed = await page.text_content("#managed-title + table tbody")
    assert "Collab" in managed and "$1.40" in managed
    await page.click(f'a[href="/wallet/earnings?artist={collab.did}"]')
    await page.wait_for_url(f"{site.url}/wallet/earnings?artist={collab.did}")
    assert "Earnings of Collab" in await page.text_content("h1")
    assert await page.locator("#payout-setup").count() == 0
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await page.screenshot(path=str(tmp_path / "earnings-manager-390.png"), full_page=True)
    await context.close()
