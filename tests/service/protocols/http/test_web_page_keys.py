"""The web page at `/` on a server with API keys: it asks for a key when the server answers
401, keeps it for the tab (sessionStorage) and sends it as X-API-Key.

A real server (ROOST_API_KEYS) and Debian's headless Chromium, as in test_web_page.py.
Screenshots land in tests/service/protocols/http/artifacts/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import ARTIFACTS, chromium
from modelkit import publish, solid_png
from playwright.sync_api import Browser, Page, expect
from servers import RoostServer

pytestmark = pytest.mark.slow

KEY = "page-key"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def server(repo: Path, start_server) -> RoostServer:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    server: RoostServer = start_server(repo, ROOST_API_KEYS=f"other-key,{KEY}")
    server.wait_ready()
    return server


def enter_key(page: Page, key: str) -> None:
    page.fill("#key-input", key)
    page.click("#key-use")


def test_the_page_asks_for_a_key_and_keeps_it_for_the_tab(
    browser: Browser, server: RoostServer, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 860})
    page = context.new_page()
    sent: dict[str, str | None] = {}
    page.on("request", lambda r: sent.update({r.url: r.headers.get("x-api-key")}))
    page.goto(server.url)

    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#key-text")).to_contain_text("only answers requests that carry an API key")
    expect(page.locator("#key-input")).to_be_focused()
    expect(page.locator("#model")).to_be_disabled()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-key-prompt.png"))

    enter_key(page, "wrong-key")
    expect(dialog).to_be_visible()
    expect(page.locator("#key-text")).to_contain_text("did not accept that key")
    expect(page.locator("#key-input")).to_have_value("")

    enter_key(page, KEY)
    expect(dialog).to_be_hidden()
    expect(page.locator("#model")).to_be_enabled()
    expect(page.locator("#model option")).to_have_text(["colours (v1)"])
    image = tmp_path / "red.png"
    image.write_bytes(solid_png((240, 10, 10)))
    page.set_input_files("#file", image)
    expect(page.locator("#predictions li")).to_have_count(3)
    classify = [url for url in sent if "/classify" in url]
    assert classify and all(sent[url] == KEY for url in classify)
    assert page.evaluate("sessionStorage.getItem('roost.apiKey')") == KEY
    assert page.evaluate("localStorage.getItem('roost.apiKey')") is None

    sent.clear()
    page.reload()  # the same tab: the key is still there, nothing is asked
    expect(page.locator("#model")).to_be_enabled()
    expect(dialog).to_be_hidden()
    assert sent[f"{server.url}/v1/models"] == KEY
    context.close()


def test_cancelling_the_prompt_explains_what_is_missing(
    browser: Browser, server: RoostServer
) -> None:
    context = browser.new_context()  # a new session: no key kept
    page = context.new_page()
    page.goto(server.url)
    expect(page.locator("#key-dialog")).to_be_visible()

    page.click("#key-cancel")
    expect(page.locator("#key-dialog")).to_be_hidden()
    expect(page.locator("#error-text")).to_have_text(
        "This server needs an API key, and none was given. Reload the page to enter one."
    )
    expect(page.locator("#model option")).to_have_text(["No models"])

    page.reload()  # asks again; Escape cancels as the button does
    expect(page.locator("#key-dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#key-dialog")).to_be_hidden()
    expect(page.locator("#error-text")).to_contain_text("needs an API key")
    assert page.evaluate("sessionStorage.getItem('roost.apiKey')") is None
    context.close()
