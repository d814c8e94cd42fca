"""The Celery app of tests/test_integrations_celery.py, run by real workers (``celery -A``).

Its broker and result backend are ``$SYNCRECON_TEST_CELERY_BROKER`` (the tests' Redis server);
its syncrecon objects are built by :func:`build`, in each process that runs a task, over the
SQLite file ``$SYNCRECON_TEST_CELERY_DB``. The two systems are simulated in memory, so each
process has its own: the worker's are what its tasks write, and the test edits and reads the
worker's records with the ``celery_test_app.edit`` and ``celery_test_app.record`` tasks.
``$SYNCRECON_TEST_CELERY_BEAT`` (seconds) makes beat send a drain that often.
"""

from __future__ import annotations

import base64
import os
from datetime import timedelta
from typing import Any

from celery import Celery

from syncrecon import FieldMap, NaturalKey, Reconciler, Side, SyncDefinition, recency
from syncrecon.integrations.celery import drain_schedule, register_tasks
from syncrecon.storage.sqlite import SQLiteStorage
from syncrecon.testing import SimulatedSystem
from syncrecon.webhooks import (
    GenericJsonParser,
    StandardWebhooksVerifier,
    WebhookHandler,
    WebhookSource,
)

SECRET = "whsec_" + base64.b64encode(b"celery-test-secret-0123456789abc").decode()
CUSTOMERS = [("ada@example.com", "Ada Lovelace"), ("alan@example.com", "Alan Turing")]

_systems: dict[str, SimulatedSystem] = {}


def build() -> list[Any]:
    """The reconciler and the webhook handler of the ``customers`` sync (once per process)."""
    from syncrecon import SystemClock

    clock = SystemClock()
    crm = SimulatedSystem("crm", clock=clock, key_prefix="crm-")
    billing = SimulatedSystem("billing", clock=clock, key_prefix="bil-")
    for email, name in CUSTOMERS:
        crm.create({"email": email, "name": name})
        billing.create({"email": email, "full_name": name})
    _systems.update(crm=crm, billing=billing)
    customers = SyncDefinition(
        name="customers",
        left=crm,
        right=billing,
        fields=[FieldMap(left="name", right="full_name", policy=recency())],
        natural_key=NaturalKey(left="email", right="email"),
    )
    storage = SQLiteStorage(os.environ["SYNCRECON_TEST_CELERY_DB"])
    handler = WebhookHandler(
        [
            WebhookSource(
                name="crm",
                sync=customers,
                side=Side.LEFT,
                verifier=StandardWebhooksVerifier(secrets=[SECRET]),
                parser=GenericJsonParser(system="crm"),
                object_type="customer",
            )
        ],
        storage,
    )
    return [Reconciler(customers, storage), handler]


app = Celery("celery_test_app")
app.conf.update(
    broker_url=os.environ.get("SYNCRECON_TEST_CELERY_BROKER", "memory://"),
    result_backend=os.environ.get("SYNCRECON_TEST_CELERY_BROKER", "cache+memory://"),
    broker_connection_retry_on_startup=True,
    result_extended=True,  # results carry their task's name and retries
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    timezone="UTC",
)
tasks = register_tasks(app, "celery_test_app:build", retry_delay=timedelta(seconds=1))

if os.environ.get("SYNCRECON_TEST_CELERY_BEAT"):
    every = timedelta(seconds=float(os.environ["SYNCRECON_TEST_CELERY_BEAT"]))
    app.conf.beat_schedule = drain_schedule(every=every)


def _record(system: str, key: str) -> dict[str, Any]:
    """A record of the worker's own simulated system (its syncrecon objects built first)."""
    if not _systems:
        raise LookupError("no syncrecon task has run in this worker yet")
    return dict(_systems[system].get(key).fields)


def _edit(system: str, key: str, fields: dict[str, Any]) -> None:
    """Edit a record of the worker's own simulated system, as a user of that system would."""
    if not _systems:
        raise LookupError("no syncrecon task has run in this worker yet")
    _systems[system].edit(key, **fields)


record = app.task(name="celery_test_app.record", shared=False)(_record)
edit = app.task(name="celery_test_app.edit", shared=False)(_edit)
