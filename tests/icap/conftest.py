"""Fixtures for the ICAP tests: an in-process service on a free loopback port."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from exifguard.icap.handler import Reqmod, ServiceConfig
from exifguard.icap.server import Server, bind, run_worker


class Running:
    """`run_worker` on its own event loop in a thread (the tests' client is blocking)."""

    def __init__(self, config: ServiceConfig, reqmod: Reqmod | None = None) -> None:
        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.server: Server | None = None
        ready = threading.Event()

        def started(server: Server) -> None:
            if reqmod is not None:
                server.reqmod.close()
                server.reqmod = reqmod
            self.server = server
            ready.set()

        self.task = self.loop.create_task(run_worker(self.sock, config, started))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert ready.wait(10), "the ICAP service did not start"

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self.task)
        except (asyncio.CancelledError, Exception):  # noqa: BLE001
            pass

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def service() -> Iterator:
    """Factory: service(config=None, reqmod=None) -> Running (stopped after the test)."""
    started: list[Running] = []

    def make(config: ServiceConfig | None = None, reqmod: Reqmod | None = None) -> Running:
        r = Running(config or ServiceConfig(), reqmod)
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()
