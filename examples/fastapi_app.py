"""Both loops in a FastAPI service: webhooks mounted at /webhooks, a worker in the lifespan.

- The fast loop: ``WebhookApp(handler)`` answers providers at ``/webhooks/<source>`` once their
  events are stored; the worker, started in the lifespan, applies them within a second.
- The slow loop: the same worker runs a reconciliation cycle at start and every 4 hours, and
  ``POST /reconcile`` runs one now and answers its report.

In your service: ``app = create_app(build(Path("/var/lib/myapp")))``, served as usual
(``uvicorn myapp.main:app``). Run as a script, it serves itself on 127.0.0.1 with uvicorn, sends a
signed webhook, an unsigned one and a ``POST /reconcile``, checks the answers, and exits 0.
"""

import asyncio
import contextlib
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from _shared import Sync, build, self_test, wait_until
from fastapi import FastAPI, HTTPException

from syncrecon import LeaseHeldError
from syncrecon.webhooks.asgi import WebhookApp


def create_app(sync: Sync) -> FastAPI:
    """The service. Your own routes go next to the two below."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Drain the inbox and outbox, and run the scheduled cycles, on this event loop (each
        # round in a worker thread). Several processes may do this: leases keep them apart.
        task = asyncio.create_task(sync.worker.run())
        yield
        sync.worker.stop()  # the round in progress finishes first
        await task

    app = FastAPI(lifespan=lifespan)
    app.mount("/webhooks", WebhookApp(sync.handler))

    @app.post("/reconcile")  # an admin endpoint: put your own authentication in front of it
    async def reconcile() -> dict[str, Any]:
        try:
            report = await sync.reconciler.arun_cycle()
        except LeaseHeldError:
            raise HTTPException(409, "a cycle of this sync is already running") from None
        return report.to_dict()

    return app


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (an ephemeral port) in a thread."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "uvicorn to start")
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True  # runs the lifespan's shutdown: the worker stops
        thread.join()


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        sync = build(Path(directory))
        try:
            with serve(create_app(sync)) as base_url:
                summary = self_test("fastapi", base_url, sync)
        finally:
            sync.close()
    print(summary)


if __name__ == "__main__":
    main()
