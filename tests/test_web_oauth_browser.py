"""Sign in with an atproto account, for real: Debian's Chromium (Playwright) types a handle on our
/login page, signs in on the reference PDS's own pages, authorizes, and lands on /me; then the
server acts as the user on their PDS through the DPoP-bound OAuth session (describeRepo,
createRecord of a play, getServiceAuth, a refresh), and signs out (tokens revoked). Bad input along
the way: malformed and unknown handles, an unreachable PDS, a denied authorization, a replayed and
an unknown ``state``, a forged session cookie, sign-out without a CSRF token.

The web app runs in this process under uvicorn on a free loopback port; Chromium is launched from
/usr/bin/chromium (``make chromium``), never downloaded. Screenshots go to the test's tmp dir."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import uvicorn

from core.config import Settings
from tests.conftest import free_port
from web import WebSettings, create_web_app
from web.oauth import dpop
from web.sealing import new_key_text
from web.settings import DEFAULT_SCOPE, TARGET_SCOPE

pytestmark = pytest.mark.network

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
PASSWORD = "test-password-1234"


def web_settings_for(net, tmp: Path) -> Settings:
    return Settings(plc_url=net.plc_url, handle_resolver_url=net.pds_url, allow_private_hosts=True,
                    db_path=str(tmp / "openmusic.sqlite"), blob_cache_dir=str(tmp / "blobs"), host="127.0.0.1",
                    port=free_port(), log_level="WARNING")


@pytest.fixture(scope="module")
async def site(net, tmp_path_factory):
    """Our web app under uvicorn, in this process, on a free loopback port."""
    tmp = tmp_path_factory.mktemp("web")
    settings = web_settings_for(net, tmp)
    app = create_web_app(settings, WebSettings(session_key=new_key_text()))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning",
                                           lifespan="on"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{settings.port}", web=app.state.web, tmp=tmp)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@pytest.fixture(scope="module")
async def browser():
    """Debian's Chromium through Playwright (no browser download)."""
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make chromium` (apt-get install chromium)")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield b
        finally:
            await b.close()


async def session_rows(site) -> int:
    row = await (await site.web.conn.execute("SELECT count(*) AS n FROM web_session")).fetchone()
    return row["n"]


async def start_sign_in(page, site, identifier: str):
    """Open /login, type ``identifier``, submit; returns the POST's response."""
    await page.goto(f"{site.url}/login")
    await page.fill("#identifier", identifier)
    async with page.expect_response(lambda r: r.url.startswith(f"{site.url}/login")
                                    and r.request.method == "POST") as info:
        await page.get_by_role("button", name="Sign in").click()
    return await info.value


async def pds_sign_in(page, net, password: str, shots: Path, prefix: str) -> None:
    """On the PDS's pages: the password (the handle is prefilled from the login hint)."""
    await page.wait_for_url(lambda u: u.startswith(net.pds_url), timeout=30_000)
    pw = page.locator('input[type="password"]')
    await pw.first.wait_for(state="visible", timeout=30_000)
    await page.screenshot(path=str(shots / f"{prefix}-pds-sign-in.png"))
    await pw.first.fill(password)
    await page.keyboard.press("Enter")


def jwt_claims(token: str) -> dict:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


async def test_sign_in_act_and_sign_out_in_chromium(net, make_client, site, browser, tmp_path):
    account = make_client("weblisten")
    shots = tmp_path
    context = await browser.new_context()
    page = await context.new_page()
    callbacks: list[str] = []
    page.on("request", lambda r: callbacks.append(r.url) if r.url.startswith(f"{site.url}/oauth/callback") else None)

    # Signed out, /me sends you to /login.
    await page.goto(f"{site.url}/me")
    assert page.url == f"{site.url}/login"
    await page.screenshot(path=str(shots / "01-login.png"))

    resp = await start_sign_in(page, site, account.handle)
    assert resp.status == 303
    await pds_sign_in(page, net, PASSWORD, shots, "02")
    authorize = page.get_by_role("button", name="Authorize")
    await authorize.wait_for(state="visible", timeout=30_000)
    await page.screenshot(path=str(shots / "03-pds-authorize.png"))
    await authorize.click()
    await page.wait_for_url(f"{site.url}/me", timeout=30_000)
    await page.screenshot(path=str(shots / "04-me.png"))
    assert (await page.text_content("#did")).strip() == account.did
    assert account.handle in await page.text_content("#handle")

    cookies = {c["name"]: c for c in await context.cookies()}
    session = cookies["om_session"]
    assert session["httpOnly"] and session["sameSite"] == "Lax" and not session["secure"]
    assert "om_oauth" not in cookies
    assert await session_rows(site) == 1

    # The server acts as the user on their PDS, through the DPoP-bound session.
    oauth = site.web.oauth
    user = await oauth.session(session["value"])
    assert user.did == account.did and user.data.scope.split()[0] == "atproto"
    assert user.data.client_id.startswith("http://localhost?redirect_uri=")
    assert (await user.describe_repo())["did"] == account.did
    track = {"uri": f"at://{account.did}/fm.openmusic.catalog.track/3kabcdefghi2a",
             "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}
    play = {"$type": "fm.openmusic.listen.play", "track": track, "createdAt": "2026-11-22T10:00:00.000Z",
            "listenedMs": 42_000, "segments": [{"startMs": 0, "endMs": 42_000}], "completed": False,
            "client": "openmusic-web-test"}
    created = await user.create_record("fm.openmusic.listen.play", play)
    rkey = created["uri"].rsplit("/", 1)[1]
    async with httpx.AsyncClient(base_url=net.pds_url) as http:
        got = (await http.get("/xrpc/com.atproto.repo.getRecord", params={
            "repo": account.did, "collection": "fm.openmusic.listen.play", "rkey": rkey})).json()
    assert got["uri"] == created["uri"] and got["value"]["listenedMs"] == 42_000
    assert got["value"]["segments"] == [{"startMs": 0, "endMs": 42_000}]

    # A service-auth token for our own procedures, minted by the user's PDS.
    token = await user.service_auth("did:web:localhost%3A8080", "fm.openmusic.payment.getBalance")
    claims = jwt_claims(token)
    assert claims["iss"] == account.did and claims["aud"] == "did:web:localhost%3A8080"
    assert claims["lxm"] == "fm.openmusic.payment.getBalance"

    # Refresh before expiry: an access token about to expire is replaced before the request.
    old_access, old_refresh = user.data.access_token, user.data.refresh_token
    await site.web.conn.execute("UPDATE web_session SET token_expires_at = ?", (int(time.time()) + 5,))
    user = await oauth.session(session["value"])
    assert (await user.describe_repo())["did"] == account.did
    assert user.data.access_token != old_access and user.data.refresh_token != old_refresh
    assert user.data.token_expires_at > time.time() + 60
    reloaded = await oauth.session(session["value"])
    assert reloaded.data.access_token == user.data.access_token  # stored, sealed

    # A replayed callback (state used once) gets a clear page and changes nothing.
    assert len(callbacks) == 1
    replay = await page.goto(callbacks[0])
    assert replay.status == 400
    assert "already used" in await page.text_content("main")
    await page.screenshot(path=str(shots / "05-replayed-state.png"))
    assert await session_rows(site) == 1

    # Sign-out without the CSRF token (or with a wrong one) is refused; still signed in.
    for form in ({}, {"csrf_token": "forged"}):
        refused = await context.request.post(f"{site.url}/logout", form=form, max_redirects=0)
        assert refused.status == 403 and "still signed in" in await refused.text()
    await page.goto(f"{site.url}/me")
    assert (await page.text_content("#did")).strip() == account.did

    # Sign out: tokens revoked at the PDS, session forgotten, /me goes to /login.
    before = user.data
    await page.get_by_role("button", name="Sign out", exact=True).click()
    await page.wait_for_url(f"{site.url}/login?signed_out=1")
    await page.screenshot(path=str(shots / "06-signed-out.png"))
    assert "signed out" in await page.text_content("main")
    assert await session_rows(site) == 0
    await page.goto(f"{site.url}/me")
    assert page.url == f"{site.url}/login"
    meta = await oauth.server_metadata(before.issuer)
    resp, body, _ = await oauth._post_as(meta["token_endpoint"], before.issuer, dpop.key_from_jwk(before.dpop_key),
                                         before.as_nonce, {"grant_type": "refresh_token",
                                                           "refresh_token": before.refresh_token,
                                                           **oauth._client_auth(before.client_id, before.issuer)})
    assert resp.status_code == 400 and body["error"] == "invalid_grant", body

    # The old session cookie, replayed by hand, is no session: a clear 401 page.
    forged = await browser.new_context()
    await forged.add_cookies([{"name": "om_session", "value": session["value"], "url": site.url}])
    fpage = await forged.new_page()
    resp = await fpage.goto(f"{site.url}/me")
    assert resp.status == 401 and "Not signed in" in await fpage.text_content("main")
    await fpage.screenshot(path=str(shots / "07-forged-cookie.png"))
    await forged.close()
    await context.close()


async def test_denied_authorization_and_bad_input(net, make_client, site, browser, tmp_path):
    account = make_client("webdeny")
    context = await browser.new_context()
    page = await context.new_page()

    # Malformed handle, unknown handle, unreachable PDS: the sign-in page again, saying why.
    for typed, status, words in (("not a handle!", 400, "Not a valid handle"),
                                 ("nobody-here.test", 404, "Handle not found"),
                                 (f"http://127.0.0.1:{free_port()}", 400, "Server unreachable"),
                                 ("did:plc:../../admin", 400, "Not a valid DID")):
        resp = await start_sign_in(page, site, typed)
        assert resp.status == status, typed
        assert words in await page.text_content("main"), typed
        assert await page.input_value("#identifier") == typed
    await page.screenshot(path=str(tmp_path / "bad-handle.png"))

    # The sign-in form without its CSRF token.
    refused = await context.request.post(f"{site.url}/login", form={"identifier": account.handle})
    assert refused.status == 403

    # Callbacks we did not start.
    resp = await page.goto(f"{site.url}/oauth/callback")
    assert resp.status == 400 and "incomplete" in await page.text_content("main")
    resp = await page.goto(f"{site.url}/oauth/callback?state=madeup&iss=http://x&code=abc")
    assert resp.status == 400 and "Unknown sign-in" in await page.text_content("main")

    # Denied on the PDS's page: a clear 403 page, no session.
    await start_sign_in(page, site, account.handle)
    await pds_sign_in(page, net, PASSWORD, tmp_path, "deny")
    deny = page.get_by_role("button", name="Deny access")
    await deny.wait_for(state="visible", timeout=30_000)
    async with page.expect_response(lambda r: r.url.startswith(f"{site.url}/oauth/callback"),
                                    timeout=30_000) as info:
        await deny.click()
    assert (await info.value).status == 403
    await page.wait_for_load_state()
    assert "Sign-in cancelled" in await page.text_content("main")
    await page.screenshot(path=str(tmp_path / "denied.png"))
    assert "om_session" not in {c["name"] for c in await context.cookies()}
    assert await session_rows(site) == 0
    await context.close()


async def test_permission_set_scope_falls_back_to_transition_generic(net, make_client, tmp_path):
    """A PDS that cannot resolve our permission set answers PAR with invalid_scope: we ask again
    with transition:generic (and the loopback client ID that carries that scope)."""
    from web.app import WebApp
    from web.oauth.store import digest

    account = make_client("webscope")
    web = WebApp(web_settings_for(net, tmp_path), WebSettings(session_key=new_key_text(), oauth_scope=TARGET_SCOPE))
    await web.start()
    try:
        url = await web.oauth.authorize(account.handle, "binding")
        assert url.startswith(f"{net.pds_url}/oauth/authorize?")
        row = await (await web.conn.execute("SELECT state_hash, sealed FROM web_oauth_request")).fetchone()
        pending = web.sealer.open(row["sealed"], f"web_oauth_request:{row['state_hash']}")
        assert pending["scope"] == DEFAULT_SCOPE
        assert "transition%3Ageneric" in pending["client_id"] and pending["binding"] == digest("binding")
    finally:
        await web.stop()
