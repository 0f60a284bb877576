"""The web page at `/` in a real headless Chromium (Debian's) against a real server.

Screenshots land in tests/service/protocols/http/artifacts/ for a person to look at.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import ARTIFACTS, launch
from modelkit import colour_model, publish, solid_png
from PIL import Image
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright
from skimage import data as photos

pytestmark = pytest.mark.slow

FAKE_CAMERA = ["--use-fake-device-for-media-stream"]
CARDINAL_URL = "https://en.wikipedia.org/wiki/Northern_cardinal"
WIKIPEDIA_SEARCH = "https://en.wikipedia.org/w/index.php?search="
BIRDS_META = re.compile(r"^Model birds · version 2 · (\d+ ms|\d+\.\d\d s)$")


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = launch(playwright)
    yield browser
    browser.close()


@pytest.fixture
def site(repo: Path, start_server) -> str:
    """`birds` v2 (the red class links to its article) and `colours` v1 (no links)."""
    gentle = colour_model(sharpness=0.03)  # softer scores: every bar has something to show
    birds = [f"Northern_cardinal\t{CARDINAL_URL}", "Green_jay", "Blue_jay"]
    publish(repo, "birds", 2, model=gentle, labels=birds, card_extra={"dataset": "garden birds"})
    publish(repo, "colours", 1, model=gentle)
    server = start_server(repo)
    server.wait_ready()
    return str(server.url)


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    files = {"chelsea": tmp_path / "chelsea.jpg", "rocket": tmp_path / "rocket.jpg"}
    Image.fromarray(photos.chelsea()).save(files["chelsea"], quality=90)  # orange cat: red
    Image.fromarray(photos.rocket()).save(files["rocket"], quality=90)  # night launch: blue
    files["notes"] = tmp_path / "notes.txt"
    files["notes"].write_text("shopping list: seeds, suet, a new feeder")
    return files


@pytest.fixture
def page(browser: Browser, site: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 860})
    page = context.new_page()
    page.goto(site)
    expect(page.locator("#model")).to_be_enabled()
    yield page
    context.close()


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def predictions(page: Page):
    return page.locator("#predictions li")


def test_photo_gets_labels_bars_and_links_without_leaving_the_server(
    browser: Browser, site: str, images: dict[str, Path]
) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 860})
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(site)

    expect(page.locator("#model option")).to_have_text(["birds (v2)", "colours (v1)"])
    expect(page.locator("#model-info")).to_have_text(
        "Version 2 · 3 labels · trained on garden birds"
    )
    page.set_input_files("#file", images["chelsea"])

    expect(predictions(page)).to_have_count(3)
    first, second, _ = predictions(page).all()
    expect(first.locator("a")).to_have_attribute("href", CARDINAL_URL)
    expect(first.locator("a")).to_contain_text("Northern cardinal")  # underscores read as spaces
    expect(first.locator("a")).to_have_attribute("data-label", "Northern_cardinal")
    expect(second.locator("a")).to_have_attribute("href", WIKIPEDIA_SEARCH + "Green%20jay")
    expect(second.locator("a")).to_have_attribute("target", "_blank")
    expect(page.locator("#meta")).to_have_text(BIRDS_META)
    expect(page.locator("#status")).to_have_text(
        re.compile(r"^Most likely Northern cardinal \(\d+\.\d%\)\.$")
    )
    expect(page.locator("#figure figcaption")).to_have_text("chelsea.jpg")
    widths = (
        predictions(page)
        .locator(".bar span")
        .evaluate_all("spans => spans.map(s => s.getBoundingClientRect().width)")
    )
    assert widths[0] > widths[1] > 0 and widths == sorted(widths, reverse=True)
    assert page.locator("#preview").evaluate("img => img.naturalWidth") == 451
    assert page.locator("#error").is_hidden()
    own = (site, f"blob:{site}")  # the page, its files, the API and the preview: works offline
    assert requested and all(url.startswith(own) for url in requested)
    screenshot(page, "web-desktop-result.png")
    context.close()


def test_text_file_shows_an_error_in_words(page: Page, images: dict[str, Path]) -> None:
    page.set_input_files("#file", images["notes"])

    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error.locator("#error-text")).to_have_text(
        "This file is not an image Roost can read. Try a JPEG, PNG, WebP, GIF, BMP or TIFF photo."
    )
    expect(error.locator("#error-detail")).to_contain_text("notes.txt")
    expect(page.locator("#result")).to_be_hidden()
    expect(page.locator("#figure")).to_be_hidden()  # no broken-image icon either
    screenshot(page, "web-error.png")

    page.set_input_files("#file", images["chelsea"])  # the next good image clears the error
    expect(predictions(page)).to_have_count(3)
    expect(error).to_be_hidden()


def test_switching_models_and_top_k_classifies_again(page: Page, images: dict[str, Path]) -> None:
    page.set_input_files("#file", images["rocket"])
    expect(predictions(page).first).to_contain_text("Blue jay")

    page.select_option("#model", "colours")
    expect(page.locator("#meta")).to_contain_text("Model colours · version 1")
    expect(predictions(page).first.locator("a")).to_contain_text("blue")
    expect(predictions(page).first.locator("a")).to_have_attribute(
        "href", WIKIPEDIA_SEARCH + "blue"
    )

    page.fill("#top-k", "1")
    page.press("#top-k", "Enter")
    expect(predictions(page)).to_have_count(1)

    page.reload()  # the chosen model is remembered
    expect(page.locator("#model")).to_have_value("colours")


def test_dropped_image_is_classified(page: Page) -> None:
    page.evaluate(
        """bytes => {
            const file = new File([new Uint8Array(bytes)], "dropped.png", {type: "image/png"});
            const data = new DataTransfer();
            data.items.add(file);
            const drop = new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true});
            document.querySelector("#drop-zone").dispatchEvent(drop);
        }""",
        list(solid_png((20, 20, 240))),
    )
    expect(predictions(page).first).to_contain_text("Blue jay")
    expect(page.locator("#figure figcaption")).to_have_text("dropped.png")


def test_busy_server_and_lost_connection_are_explained(page: Page, images) -> None:
    busy = {"error": {"code": "overloaded", "message": "queue full (512 images)"}}
    page.route(
        "**/classify*",
        lambda route: route.fulfill(status=503, json=busy, headers={"Retry-After": "3"}),
    )
    page.set_input_files("#file", images["chelsea"])
    expect(page.locator("#error-text")).to_have_text(
        "The server is busy right now. Try again in 3 seconds."
    )
    expect(page.locator("#error-detail")).to_have_text("Details: queue full (512 images)")

    page.unroute("**/classify*")
    page.route("**/classify*", lambda route: route.abort("connectionrefused"))
    page.set_input_files("#file", images["chelsea"])
    expect(page.locator("#error-text")).to_contain_text("Roost cannot be reached.")


def test_keyboard_reaches_every_control_and_opens_the_file_picker(page: Page) -> None:
    # Intercept file choosers from the start: interception switched on by expect_file_chooser
    # alone can lose the race with the key press, and then an invisible real dialog opens.
    choosers: list[object] = []
    page.on("filechooser", lambda chooser: choosers.append(chooser))
    focused = []
    for _ in range(4):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id"))
    assert focused == ["model", "top-k", "choose", "camera-open"]
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # a visible focus ring

    page.focus("#choose")
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    assert not chooser.value.is_multiple() and len(choosers) == 1


def test_phone_sized_screen_in_dark_mode(
    browser: Browser, site: str, images: dict[str, Path]
) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        color_scheme="dark",
    )
    page = context.new_page()
    page.goto(site)
    page.set_input_files("#file", images["chelsea"])
    expect(predictions(page)).to_have_count(3)

    page.wait_for_function("window.scrollY > 100")  # scrolled to the answer, below the picker
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    button = page.locator("#choose").bounding_box()
    assert button is not None and button["height"] >= 44  # a finger-sized target
    screenshot(page, "web-phone-result.png")
    context.close()


def test_camera_without_a_camera_says_so(page: Page) -> None:
    page.click("#camera-open")

    expect(page.locator("#error-text")).to_have_text(
        "No camera was found on this device. Choose an image instead."
    )
    expect(page.locator("#camera")).to_be_hidden()
    screenshot(page, "web-no-camera.png")


@pytest.fixture(scope="module")
def camera_browser(playwright: Playwright) -> Iterator[Browser]:
    """Chromium with its fake camera: a moving test pattern."""
    browser = launch(playwright, *FAKE_CAMERA)
    yield browser
    browser.close()


def test_camera_permission_denied_then_granted_and_captured(
    camera_browser: Browser, site: str
) -> None:
    denied = camera_browser.new_context()
    page = denied.new_page()
    page.goto(site)
    page.click("#camera-open")
    expect(page.locator("#error-text")).to_contain_text("Camera access is blocked.")
    denied.close()

    granted = camera_browser.new_context(permissions=["camera"])
    page = granted.new_page()
    page.goto(site)
    expect(page.locator("#model")).to_be_enabled()
    page.click("#camera-open")
    expect(page.locator("#camera video")).to_be_visible()
    page.wait_for_function("document.querySelector('#camera video').videoWidth > 0")
    page.click("#camera-capture")

    expect(predictions(page)).to_have_count(3)
    expect(page.locator("#figure figcaption")).to_have_text("camera.jpg")
    expect(page.locator("#camera")).to_be_hidden()
    screenshot(page, "web-camera-result.png")
    granted.close()


def test_explain_toggles_a_heatmap_over_the_photo(page: Page, images: dict[str, Path]) -> None:
    explains: list[str] = []
    page.on("request", lambda r: explains.append(r.url) if "/explain" in r.url else None)
    page.set_input_files("#file", images["chelsea"])
    expect(predictions(page)).to_have_count(3)
    explain, heat = page.locator("#explain"), page.locator("#heat")
    expect(explain).to_be_visible()
    expect(explain).to_have_attribute("aria-pressed", "false")
    expect(heat).to_be_hidden()
    expect(page.locator("#uncertain")).to_be_hidden()  # no min_confidence configured

    explain.click()
    expect(heat).to_be_visible()
    expect(explain).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#explain-note")).to_contain_text("“Northern cardinal” depends on most")
    assert page.locator("#heatmap").evaluate("img => img.naturalWidth") == 32  # the model's input
    assert len(explains) == 1 and "version=2" in explains[0] and "format=png" in explains[0]
    photo, overlay = page.locator("#preview").bounding_box(), heat.bounding_box()
    assert photo is not None and overlay is not None
    for side in ("x", "y", "width", "height"):  # a stretching model: all of the photo
        assert abs(photo[side] - overlay[side]) < 1, (side, photo, overlay)
    screenshot(page, "web-explain.png")

    explain.click()
    expect(heat).to_be_hidden()
    expect(explain).to_have_attribute("aria-pressed", "false")
    explain.click()  # shown again from the one answer
    expect(heat).to_be_visible()
    assert len(explains) == 1

    page.set_input_files("#file", images["rocket"])  # a new answer: nothing explained yet
    expect(predictions(page).first).to_contain_text("Blue jay")
    expect(heat).to_be_hidden()
    expect(explain).to_have_attribute("aria-pressed", "false")


def test_image_the_browser_cannot_show_offers_no_explanation(page: Page, tmp_path: Path) -> None:
    tiff = tmp_path / "chelsea.tiff"  # Roost reads TIFF; Chromium does not display it
    Image.fromarray(photos.chelsea()).save(tiff)
    page.set_input_files("#file", tiff)
    expect(predictions(page)).to_have_count(3)
    expect(page.locator("#figure")).to_be_hidden()
    expect(page.locator("#explain")).to_be_hidden()


@pytest.fixture
def cropping_site(repo: Path, start_server) -> str:
    """`square` crops the centre of the photo to its square input."""
    publish(
        repo,
        "square",
        1,
        model=colour_model(sharpness=0.03),
        card_extra={"resize": "center_crop"},
    )
    server = start_server(repo)
    server.wait_ready()
    return str(server.url)


def test_center_crop_model_explains_only_the_crop(
    browser: Browser, cropping_site: str, images: dict[str, Path]
) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 860})
    page = context.new_page()
    page.goto(cropping_site)
    page.set_input_files("#file", images["chelsea"])
    expect(predictions(page)).to_have_count(3)
    page.click("#explain")
    expect(page.locator("#heat")).to_be_visible()

    photo, overlay = page.locator("#preview").bounding_box(), page.locator("#heat").bounding_box()
    assert photo is not None and overlay is not None
    # chelsea is 451x300 and the model square: the centred 300x300 of it.
    assert abs(overlay["width"] - photo["width"] * 300 / 451) < 1
    assert abs(overlay["height"] - photo["height"]) < 1
    assert abs((overlay["x"] - photo["x"]) * 2 + overlay["width"] - photo["width"]) < 1
    context.close()


@pytest.fixture
def wary_site(repo: Path, start_server) -> str:
    """`wary` asks for 99 % before it is sure: a colour model never gets there on a photo."""
    publish(repo, "wary", 1, model=colour_model(sharpness=0.03), config={"min_confidence": 0.99})
    server = start_server(repo)
    server.wait_ready()
    return str(server.url)


def test_answer_below_min_confidence_is_marked_uncertain(
    browser: Browser, wary_site: str, images: dict[str, Path]
) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 860})
    page = context.new_page()
    page.goto(wary_site)
    page.set_input_files("#file", images["chelsea"])
    expect(predictions(page)).to_have_count(3)

    badge = page.locator("#uncertain")
    expect(badge).to_be_visible()
    expect(badge).to_contain_text("Uncertain")
    expect(page.locator("#status")).to_have_text(
        re.compile(r"^Most likely red \(\d+\.\d%\), but the model is not sure\.$")
    )
    screenshot(page, "web-uncertain.png")
    context.close()
