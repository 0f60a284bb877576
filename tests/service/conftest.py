"""In-process Roost for HTTP tests: `create_app` + lifespan + httpx over ASGI, no sockets.

Use `start_app` (the in-process twin of `start_server`) for anything that is about HTTP
behaviour; keep `start_server` (a real `python -m service` subprocess) for what needs real
sockets, signals or the command line:

    async def test_something(repo: Path, start_app) -> None:
        publish(repo, "colours", 1)
        roost = await start_app(repo, max_upload_bytes=1024 * 1024)  # ServiceSettings fields
        await roost.wait_ready()
        r = await roost.client.post("/v1/classify", content=png, headers={...})
        assert (await roost.reload()).status_code == 200

Every app started is shut down (lifespan shutdown: batchers drained, sessions closed) at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from servers import ADMIN_KEY

from service.app import create_app
from service.settings import ServiceSettings


class InProcessRoost:
    """An app built by `create_app`, its lifespan entered, reached by `client` over ASGI."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient, settings: ServiceSettings):
        self.app = app
        self.client = client
        self.settings = settings

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll /readyz until 200; the timeout only catches a hung load."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = ""
        while loop.time() < deadline:
            r = await self.client.get("/readyz")
            if r.status_code == 200:
                return
            last = r.text
            await asyncio.sleep(0.01)
        raise TimeoutError(f"not ready after {timeout} s: {last}")

    async def reload(self) -> httpx.Response:
        return await self.client.post("/v1/repository/reload", headers={"X-API-Key": ADMIN_KEY})


StartApp = Callable[..., Awaitable[InProcessRoost]]


@pytest.fixture
async def start_app() -> AsyncIterator[StartApp]:
    """`await start_app(repo, **settings)`: an `InProcessRoost`, shut down at teardown.

    Settings are `ServiceSettings` fields (the ROOST_* names in lower case); as for
    `start_server`, polling is off and the admin key is `servers.ADMIN_KEY`.
    `tracer_provider` receives the app's spans (the OTEL_* variables are not read then).
    `raise_app_exceptions=False` turns an unhandled app exception into the 500 a real server
    sends instead of raising it in the test.
    """
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            repo: Path,
            *,
            raise_app_exceptions: bool = True,
            tracer_provider: TracerProvider | None = None,
            **overrides: Any,
        ) -> InProcessRoost:
            settings = ServiceSettings(
                model_repo=repo,
                poll_interval_s=0,
                admin_api_keys=[ADMIN_KEY],
                **overrides,
            )
            app = create_app(settings, tracer_provider)
            # Generous: these only fail a hung startup or shutdown (the default is 5 s).
            manager = await stack.enter_async_context(
                LifespanManager(app, startup_timeout=60, shutdown_timeout=60)
            )
            transport = httpx.ASGITransport(
                app=manager.app, raise_app_exceptions=raise_app_exceptions
            )
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://roost")
            )
            return InProcessRoost(app, client, settings)

        yield start
