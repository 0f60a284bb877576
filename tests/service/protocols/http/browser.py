"""Debian's Chromium, headless, driven by Playwright: what the page and docs tests share.

Screenshots go to `ARTIFACTS` (tests/service/protocols/http/artifacts/, ignored by git) for a
person to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Playwright, sync_playwright
from servers import require_program

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).parent / "artifacts"


def launch(playwright: Playwright, *extra_args: str) -> Browser:
    """A headless Chromium with `CHROMIUM_ARGS` and `extra_args` (one Playwright per test
    module: its sync API runs an event loop that a second one would find running)."""
    return playwright.chromium.launch(
        executable_path=require_program("chromium", "chromium"),
        args=[*CHROMIUM_ARGS, *extra_args],
    )


@contextmanager
def chromium(*extra_args: str) -> Iterator[Browser]:
    """`launch` in a Playwright of its own, closed after the block."""
    with sync_playwright() as playwright:
        browser = launch(playwright, *extra_args)
        try:
            yield browser
        finally:
            browser.close()
