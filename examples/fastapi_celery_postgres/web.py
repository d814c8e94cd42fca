"""The web side of the example: the webhook front door and the operator pages, in FastAPI.

    uvicorn web:create_app --factory --workers 2

Each uvicorn worker builds its own handler and storage (:func:`sync.build`). A provider's
webhook is verified and stored in PostgreSQL, answered 200, and a ``syncrecon.drain`` task is
sent at once, so a Celery worker applies it within moments (beat's drain every few seconds is
the safety net). ``POST /reconcile`` sends a ``syncrecon.cycle`` task and answers its id;
``GET /reconcile/{id}`` answers its state and, once done, its result. The operator queue and
the dashboard are at ``/ops/`` and ``/ops/dashboard``.

Put your own authentication in front of ``/ops`` and ``/reconcile``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from celery.result import AsyncResult
from fastapi import FastAPI
from sync import build, customers
from tasks import app as celery_app

from syncrecon.integrations.celery import task_name
from syncrecon.queue import OperatorQueue
from syncrecon.web import QueueApp
from syncrecon.webhooks.asgi import WebhookApp

log = logging.getLogger("example.web")


def create_app() -> FastAPI:
    """The app of one web process (uvicorn calls it once per worker with ``--factory``)."""
    _, handler = build()  # this process's own storage; the web needs only the handler

    def drain_now(count: int) -> None:
        # Called in the request's thread once its events are stored. A broker that is down
        # fails this send, not the webhook: the events wait in the inbox for beat's drain.
        celery_app.send_task(task_name("drain"), expires=60)

    handler.add_listener(drain_now)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        handler.storage.close()

    app = FastAPI(lifespan=lifespan)
    app.mount("/webhooks", WebhookApp(handler))  # POST /webhooks/crm, /webhooks/billing
    app.mount("/ops", QueueApp(OperatorQueue(handler.storage, [customers])))

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/reconcile", status_code=202)
    def reconcile(full: bool | None = None) -> dict[str, Any]:
        sent = celery_app.send_task(task_name("cycle"), args=["customers"], kwargs={"full": full})
        return {"task_id": sent.id}

    @app.get("/reconcile/{task_id}")
    def reconcile_result(task_id: str) -> dict[str, Any]:
        result = AsyncResult(task_id, app=celery_app)
        answer: dict[str, Any] = {"task_id": task_id, "state": result.state}
        if result.successful():
            answer["result"] = result.result  # {"status": "done" | "skipped", ...}
        elif result.failed():
            answer["error"] = repr(result.result)
        return answer

    return app
