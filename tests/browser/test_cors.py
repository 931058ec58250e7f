"""CORS in a real browser: a page served from another origin calls the API with the Supabase
clients' headers (``apikey``, ``authorization``, ``x-client-info``). From an origin in
``RTM_CORS_ORIGINS`` the calls work; from any other the browser blocks them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from playwright.async_api import Browser

from tests.conftest import RunningServer, Seed, running_server

from .conftest import open_page, screenshot

PAGE = """<!doctype html>
<html><head><title>another site</title></head>
<body><h1>Another site</h1><pre id="out">waiting</pre>
<script>
const cfg = %s;
const out = document.getElementById("out");
const headers = {apikey: cfg.key, authorization: "Bearer " + cfg.token, "x-client-info": "cors-test"};
async function run() {
  const results = [];
  try {
    const me = await fetch(cfg.api + "/api/me", {headers});
    const body = await me.json();
    results.push("me:" + me.status + ":" + body.data.kind + ":" + (me.headers.get("x-request-id") ? "id" : "no-id"));
    const rpc = await fetch(cfg.api + "/rest/v1/rpc/get_unread_message_count", {
      method: "POST",
      headers: {...headers, "content-type": "application/json"},
      body: JSON.stringify({user_id: cfg.user, customer_id: null}),
    });
    results.push("rpc:" + rpc.status);
  } catch (e) {
    results.push("blocked:" + e.name + ":" + e.message);
  }
  out.textContent = results.join("\\n");
  document.body.dataset.done = "1";
}
run();
</script></body></html>
"""


async def _site(config: dict[str, str]) -> AsyncIterator[str]:
    """A page on a server of its own (another port: another origin); yields its URL."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE % json.dumps(config), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _result(browser: Browser, url: str, name: str) -> str:
    context, page = await open_page(browser, url + "/")
    try:
        await page.wait_for_function("document.body.dataset.done === '1'", timeout=10_000)
        await screenshot(page, name)
        return await page.locator("#out").inner_text()
    finally:
        await context.close()


@pytest.mark.parametrize("allowed", [True, False], ids=["allowed-origin", "other-origin"])
async def test_a_page_from_another_origin_calls_the_api(
    browser: Browser, database_url: str, seed: Seed, allowed: bool
) -> None:
    user, token = await seed.staff()
    config: dict[str, str] = {"token": token, "user": str(user)}
    async for site in _site(config):
        origins = (site,) if allowed else ("http://127.0.0.1:1",)
        async with running_server(database_url, cors_origins=origins) as srv:
            server: RunningServer = srv
            config.update(api=server.http_url, key=server.anon_key)
            text = await _result(browser, site, f"cors-{'allowed' if allowed else 'blocked'}")
    if allowed:
        assert text.splitlines() == ["me:200:staff:id", "rpc:200"], text
    else:
        assert text.startswith("blocked:TypeError:"), text
        assert "Failed to fetch" in text, text
