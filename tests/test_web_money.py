"""Money in the web app, for real: the AppView runtime with payments on (Stripe is localstripe, its
signed webhooks delivered to us; the broker an account on the reference PDS) serves the wallet and
the tip forms; Debian's Chromium signs a listener in on the PDS, types a test card into localstripe's
stand-in for Stripe.js, buys credit, tips a song and an artist (the tips are records in the
listener's repo, the broker's signed settlements come back through the firehose), has a tip refused
for want of credit and another for being under the minimum, subscribes and cancels, in English and
Spanish. Units: amounts typed by people, money formatted per locale. Screenshots go to tmp_path."""

from __future__ import annotations

import httpx
import pytest

from core.publish import publish_profile, publish_track
from devkit.media import tune_wav
from tests.conftest import eventually
from tests.test_web_oauth_browser import PASSWORD, pds_sign_in, start_sign_in
from tests.test_web_pages import browser, indexed, path_of  # noqa: F401  (browser: a fixture)
from web.i18n import current_locale
from web.money import format_money, parse_amount

pytestmark = pytest.mark.network
CARD = {"number": "4242424242424242", "exp_month": "12", "exp_year": "30", "cvc": "123", "postal_code": "12345"}


@pytest.mark.parametrize(("text", "minor"), [("2", 200), ("1.50", 150), ("1,5", 150), ("$3", 300), (" 0.10 ", 10),
                                             ("1 USD", 100), ("12€", 1200)])
def test_parse_amount(text, minor):
    assert parse_amount(text, "USD") == minor


@pytest.mark.parametrize("text", ["", "abc", "1.234", "1,000.00", "-1", "1e3", "1..2", "0x10", "١"])
def test_parse_amount_refuses(text):
    with pytest.raises(ValueError):
        parse_amount(text, "USD")


def test_parse_amount_follows_the_currency():
    assert parse_amount("500", "JPY") == 500
    with pytest.raises(ValueError):
        parse_amount("5.5", "JPY")


def test_format_money_per_locale():
    token = current_locale.set("es")
    try:
        assert format_money(150, "USD") == "1,50\xa0US$"
    finally:
        current_locale.reset(token)
    assert format_money(150, "USD") == "$1.50"
    assert format_money(-5, "USD") == "-$0.05"


async def fill_card(page) -> None:
    for field, value in CARD.items():
        await page.fill(f'#card input[placeholder="{field}"]', value)


async def settlement_of(rt, tip_uri: str) -> dict | None:
    resp = await rt.http_client.get("/xrpc/fm.openmusic.payment.getSettlement", params={"uri": tip_uri})
    return resp.json()["settlement"] if resp.status_code == 200 else None


async def test_wallet_credit_tips_and_subscription_in_chromium(net, make_client, paid_appview, browser,  # noqa: F811
                                                               tmp_path):
    rt = paid_appview
    artist = make_client("moneyartist")
    publish_profile(artist, "Money Artist")
    audio = tmp_path / "coin.wav"
    audio.write_bytes(tune_wav(3, seconds=2.0))
    track = publish_track(artist, audio, title="Coin Song")
    await indexed(rt, track.uri)
    listener = make_client("moneylistener")
    site = type("Site", (), {"url": f"http://127.0.0.1:{rt.settings.port}"})
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    shots = tmp_path

    assert (await start_sign_in(page, site, listener.handle)).status == 303
    await pds_sign_in(page, net, PASSWORD, shots, "01")
    await page.get_by_role("button", name="Authorize").click()
    await page.wait_for_url(lambda u: "/oauth/callback" not in u and u.startswith(site.url), timeout=30_000)

    # The wallet: no credit yet; buy $10 with the test card through localstripe's Stripe.js stand-in.
    await page.goto(f"{site.url}/wallet")
    assert await page.text_content("#credit") == "$0.00"
    csp = (await page.request.get(f"{site.url}/wallet")).headers["content-security-policy"]
    assert f"script-src 'self' {rt.settings.stripe_api_base}" in csp
    await fill_card(page)
    await page.check('input[name="amount"][value="1000"]')
    await page.screenshot(path=str(shots / "02-wallet.png"), full_page=True)
    await page.get_by_role("button", name="Buy credit").click()
    await page.wait_for_url(f"{site.url}/wallet?paid=1", timeout=30_000)
    assert await page.text_content("#credit") == "$10.00"

    # A song tip of $0.50 ("0,50" as a Spanish reader types it): the record goes to the listener's
    # repo, the broker settles it, the tip's page follows until the signed settlement is indexed.
    await page.goto(f"{site.url}{path_of(track.uri)}")
    assert await page.input_value("#tip-amount") == "0.10"
    await page.fill("#tip-amount", "0,50")
    await page.fill("#tip-message", "for the coin")
    await page.get_by_role("button", name="Send tip").click()
    await page.wait_for_url(lambda u: "/tip/" in u, timeout=30_000)
    state = page.locator("#tip-state")
    await state.filter(has_text="Settled").wait_for(timeout=30_000)
    await page.screenshot(path=str(shots / "03-tip-settled.png"), full_page=True)
    rkey = page.url.rsplit("/", 1)[-1]
    song_tip = f"at://{listener.did}/fm.openmusic.payment.tip/{rkey}"
    async with httpx.AsyncClient(base_url=net.pds_url) as pds:
        got = (await pds.get("/xrpc/com.atproto.repo.getRecord", params={
            "repo": listener.did, "collection": "fm.openmusic.payment.tip", "rkey": rkey})).json()["value"]
    assert got["amount"] == 50 and got["currency"] == "USD" and got["subject"] == artist.did
    assert got["track"] == {"uri": track.uri, "cid": track.cid} and got["message"] == "for the coin"
    settled = await settlement_of(rt, song_tip)
    assert settled["status"] == "settled" and settled["amount"] == 50

    # The same tip form sent twice (a double click, a resend): one tip record, both answers its page.
    await page.goto(f"{site.url}{path_of(track.uri)}")
    fields = {name: await page.locator(f'form.tip input[name="{name}"]').input_value()
              for name in ("csrf_token", "subject", "track", "key")}
    fields |= {"amount": "0.10"}
    answers = [await page.request.post(f"{site.url}/tip", form=fields, max_redirects=0) for _ in range(2)]
    assert [a.status for a in answers] == [303, 303]
    assert answers[0].headers["location"] == answers[1].headers["location"] == f"/tip/{fields['key']}"
    async with httpx.AsyncClient(base_url=net.pds_url) as pds:
        tips = (await pds.get("/xrpc/com.atproto.repo.listRecords", params={
            "repo": listener.did, "collection": "fm.openmusic.payment.tip"})).json()["records"]
    assert len(tips) == 2 and sum(t["uri"].endswith(fields["key"]) for t in tips) == 1
    await eventually(lambda: settlement_of(rt, f"at://{listener.did}/fm.openmusic.payment.tip/{fields['key']}"))

    # Under the artist minimum: refused before anything is written, with the minimum named.
    await page.goto(f"{site.url}/artist/{artist.handle}")
    await page.fill("#tip-amount", "0.50")
    async with page.expect_response(lambda r: r.url.endswith("/tip") and r.request.method == "POST") as info:
        await page.get_by_role("button", name="Send tip").click()
    assert (await info.value).status == 400
    assert "$1.00" in await page.text_content("main")
    # An artist tip of $1.50, then one larger than the credit left: refused by the broker, reason shown.
    await page.goto(f"{site.url}/artist/{artist.handle}")
    await page.fill("#tip-amount", "1.50")
    await page.get_by_role("button", name="Send tip").click()
    await state.filter(has_text="Settled").wait_for(timeout=30_000)
    await page.goto(f"{site.url}/artist/{artist.handle}")
    await page.fill("#tip-amount", "50")
    await page.get_by_role("button", name="Send tip").click()
    await state.filter(has_text="Refused").wait_for(timeout=30_000)
    assert "enough credit" in await state.text_content()
    await page.screenshot(path=str(shots / "04-tip-refused.png"), full_page=True)

    await page.goto(f"{site.url}/wallet")
    assert await page.text_content("#credit") == "$7.90"  # 10.00 - 0.50 - 0.10 - 1.50
    sent = [await li.text_content() for li in await page.locator(".sent-tips li").all()]
    assert len(sent) == 4 and "$50.00" in sent[0] and "refused" in sent[0] and "settled" in sent[1]
    # The listener's tips, as anyone can list them: newest first, the refused one included, $2.00 settled.
    given = (await rt.http_client.get("/xrpc/fm.openmusic.payment.getTips", params={"payer": listener.handle})).json()
    assert [t["amount"] for t in given["tips"]] == [5000, 150, 10, 50] and given["totalSettled"] == 210
    assert given["tips"][0]["settlement"]["status"] == "rejected" and given["tips"][3]["track"] == track.uri
    both = await rt.http_client.get("/xrpc/fm.openmusic.payment.getTips",
                                    params={"payer": listener.did, "artist": artist.did})
    assert both.status_code == 400 and "exactly one" in both.json()["message"]

    # Subscribe to Plus with the card, then cancel at the end of the month.
    await fill_card(page)
    await page.get_by_role("button", name="Subscribe to Plus").click()
    await page.wait_for_url(f"{site.url}/wallet?subscribed=1", timeout=30_000)
    text = await page.text_content("#subscription")
    assert "Plus: active" in text and "Renews on" in text
    await page.screenshot(path=str(shots / "05-subscribed.png"), full_page=True)
    await page.get_by_text("Cancel subscription").click()  # a second step asks before anything happens
    assert "Ends on" not in await page.text_content("#subscription")
    await page.get_by_role("button", name="Yes, cancel it").click()
    await page.wait_for_url(f"{site.url}/wallet?cancelled=1", timeout=30_000)
    assert "Ends on" in await page.text_content("#subscription")

    # In Spanish, money and dates follow the locale.
    await page.goto(f"{site.url}/wallet?lang=es")
    assert await page.text_content("#credit") == "7,90\xa0US$"

    # A phone: nothing wider than the screen.
    phone = await browser.new_context(viewport={"width": 390, "height": 844}, storage_state=await context.storage_state())
    small = await phone.new_page()
    await small.goto(f"{site.url}/wallet")
    assert await small.evaluate("document.documentElement.scrollWidth") <= 390
    await small.screenshot(path=str(shots / "06-wallet-390.png"), full_page=True)
    await phone.close()
    await context.close()


async def test_money_endpoints_refuse_bad_requests(paid_appview):
    rt = paid_appview
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rt.settings.port}") as http:
        signed_out = await http.get("/wallet")
        assert signed_out.status_code == 303 and signed_out.headers["location"] == "/login?next=%2Fwallet"
        card = await http.post("/wallet/card", data={"csrf_token": "x"})
        assert card.status_code == 401 and card.json()["error"] == "AuthRequired"
        tip = await http.post("/tip", data={"csrf_token": "x", "subject": "did:plc:x", "amount": "1"})
        assert tip.status_code == 401
        balance = await http.get("/wallet/balance")
        assert balance.status_code == 401 and balance.json()["error"] == "AuthRequired"


async def test_card_setup_needs_service_auth(paid_appview, make_client):
    rt = paid_appview
    anon = await rt.http_client.post("/xrpc/fm.openmusic.payment.createCardSetup", json={})
    assert anon.status_code == 401 and anon.json()["error"] == "AuthRequired"
    client = make_client("cardsetup")
    token = client.service_auth(rt.payments.service_did, "fm.openmusic.payment.createCardSetup")
    ok = await rt.http_client.post("/xrpc/fm.openmusic.payment.createCardSetup", json={},
                                   headers={"authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and ok.json()["clientSecret"].startswith(ok.json()["setupIntent"])

    async def declined() -> httpx.Response:
        t = client.service_auth(rt.payments.service_did, "fm.openmusic.payment.createCreditPurchase")
        return await rt.http_client.post("/xrpc/fm.openmusic.payment.createCreditPurchase",
                                         json={"amount": 500, "paymentMethod": "pm_missing"},
                                         headers={"authorization": f"Bearer {t}"})
    resp = await eventually(declined, until=lambda r: r.status_code != 502, timeout=10)
    assert resp.status_code == 400 and resp.json()["error"] == "PaymentFailed"
