"""/docs and /redoc with the network off: everything they load comes from the server itself.

A real server and Debian's headless Chromium, in which every request for another host than
127.0.0.1 is aborted (and recorded) and no host name resolves. Swagger UI must still render
every operation, take an API key through "Authorize" and send it with "Try it out".
Screenshots land in tests/service/protocols/http/artifacts/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from browser import ARTIFACTS, chromium
from modelkit import publish
from playwright.sync_api import Browser, BrowserContext, Route, expect
from servers import RoostServer

pytestmark = pytest.mark.slow

NO_NAME_RESOLVES = ["--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]
KEY = "docs-key"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium(*NO_NAME_RESOLVES) as browser:
        yield browser


@pytest.fixture
def server(repo: Path, start_server) -> RoostServer:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    server: RoostServer = start_server(repo, ROOST_API_KEYS=KEY)
    server.wait_ready()
    return server


class Offline:
    """A browser context whose requests may reach 127.0.0.1 only; `left` lists the others."""

    def __init__(self, browser: Browser) -> None:
        self.context: BrowserContext = browser.new_context(viewport={"width": 1280, "height": 900})
        self.left: list[str] = []
        self.requested: list[str] = []
        self.context.route("**/*", self._guard)
        self.page = self.context.new_page()
        self.page.on("request", lambda request: self.requested.append(request.url))

    def _guard(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.left.append(route.request.url)
            route.abort("internetdisconnected")


@pytest.fixture
def offline(browser: Browser) -> Iterator[Offline]:
    offline = Offline(browser)
    yield offline
    offline.context.close()


def test_swagger_ui_renders_and_authorizes_from_the_server_alone(
    server: RoostServer, offline: Offline
) -> None:
    operations = sum(
        len(methods) for methods in server.client.get("/openapi.json").json()["paths"].values()
    )
    page = offline.page
    keys_sent: list[str | None] = []
    page.on(
        "request",
        lambda r: (
            keys_sent.append(r.headers.get("x-api-key")) if r.url.endswith("/v1/models") else None
        ),
    )
    page.goto(f"{server.url}/docs")

    expect(page.locator(".opblock")).to_have_count(operations)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/v1/classify" in paths and "/v2/models/{name}/infer" in paths
    expect(page.locator(".information-container .title")).to_contain_text("Roost")

    page.click("button.authorize")  # there because the schema declares the keys
    page.fill("#api_key_value", KEY)
    page.locator(".auth-container").first.locator("button[type=submit]").click()
    page.locator(".auth-container").first.locator("button.btn-done").click()

    operation = page.locator("#operations-models-list_models_v1_models_get")
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status")
    expect(status).to_have_text("200")
    assert keys_sent == [KEY]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "docs-offline.png"), full_page=False)

    assert offline.left == []
    assert all(url.startswith(server.url) for url in offline.requested), offline.requested
    assets = [url for url in offline.requested if "/docs/assets/" in url]
    assert {u.rsplit("/", 1)[1] for u in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}


def test_redoc_renders_from_the_server_alone(server: RoostServer, offline: Offline) -> None:
    page = offline.page
    page.goto(f"{server.url}/redoc")

    expect(page.locator("h1")).to_contain_text("Roost")
    expect(page.locator("h2", has_text="Classify images")).to_be_visible()
    expect(page.get_by_text("APIKeyHeader").first).to_be_visible()  # the security schemes
    page.screenshot(path=str(ARTIFACTS / "redoc-offline.png"), full_page=False)

    # ReDoc's vendor logo is the one outside image it asks for: the page's policy stops it in
    # the browser, before any request is made.
    assert offline.left == []
    assert "/docs/assets/redoc.standalone.js" in " ".join(offline.requested)
