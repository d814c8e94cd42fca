"""The Celery app of the example: syncrecon's tasks and their beat schedule.

    celery -A tasks worker --loglevel=INFO     # runs cycles, drains, prunes (any number of them)
    celery -A tasks beat --loglevel=INFO       # sends them on schedule (exactly one)

Settings (environment): ``CELERY_BROKER_URL`` (``redis://127.0.0.1:6379/0``) and
``CELERY_RESULT_BACKEND`` (the broker's URL); ``SYNCRECON_CYCLE_EVERY`` (seconds between
cycles, 4 hours) and ``SYNCRECON_DRAIN_EVERY`` (seconds between drains, 5).
"""

from __future__ import annotations

import os
from datetime import timedelta

from celery import Celery

from syncrecon.integrations.celery import (
    cycle_schedule,
    drain_schedule,
    prune_schedule,
    register_tasks,
)

BROKER = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")

app = Celery("syncrecon_example")
app.conf.update(
    broker_url=BROKER,
    result_backend=os.environ.get("CELERY_RESULT_BACKEND", BROKER),
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=timedelta(days=1),
    timezone="UTC",
)

# The objects are built by sync.build() in each worker process, when its first task runs;
# beat and the web processes only send messages (a sync's name, never an object).
tasks = register_tasks(app, "sync:build")

app.conf.beat_schedule = {
    **cycle_schedule(
        "customers",
        every=timedelta(seconds=float(os.environ.get("SYNCRECON_CYCLE_EVERY", 4 * 3600))),
    ),
    **drain_schedule(every=timedelta(seconds=float(os.environ.get("SYNCRECON_DRAIN_EVERY", 5)))),
    **prune_schedule(),
}
