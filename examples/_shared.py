"""What the three host examples share: the sync, both loops over SQLite, and their self-test.

``fastapi_app.py``, ``flask_app.py`` and ``django_app.py`` each put the same sync into a web
framework; this module builds that sync. Your project keeps the equivalent in a module of its
own (``myapp/sync.py``), which is also what ``python -m syncrecon worker myapp.sync:worker``
imports. Run alone (``python examples/_shared.py``), it checks the wiring without a server: a
signed webhook in, one worker round, the change in the other system.
"""

import base64
import contextlib
import hashlib
import hmac
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from syncrecon import (
    FieldMap,
    NaturalKey,
    Reconciler,
    Side,
    SyncDefinition,
    SystemClock,
    recency,
    source_of_truth,
)
from syncrecon.storage.sqlite import SQLiteStorage
from syncrecon.testing import SimulatedSystem
from syncrecon.webhooks import (
    GenericJsonParser,
    StandardWebhooksVerifier,
    WebhookHandler,
    WebhookRequest,
    WebhookSource,
)
from syncrecon.worker import Worker

# Each sender's Standard Webhooks secret. Yours come from the environment or a secret store.
CRM_SECRET = "whsec_" + base64.b64encode(b"crm: a webhook secret of 32 bytes").decode()
BILLING_SECRET = "whsec_" + base64.b64encode(b"billing: another secret, 32 bytes").decode()
CUSTOMERS = [("ada@example.com", "Ada Lovelace"), ("alan@example.com", "Alan Turing")]


@dataclass
class Sync:
    """Everything a host needs: the systems, the storage, both loops and their worker."""

    crm: SimulatedSystem
    billing: SimulatedSystem
    storage: SQLiteStorage
    handler: WebhookHandler  # the fast loop's front door
    reconciler: Reconciler  # the slow loop
    worker: Worker  # drains the handler's inbox and outbox, runs the cycles on a schedule

    def close(self) -> None:
        self.storage.close()


def build(directory: Path) -> Sync:
    """The sync, with its state in ``directory/syncrecon.sqlite``."""
    clock = SystemClock()
    # Stand-ins for real systems: replace with your connectors.
    crm = SimulatedSystem("crm", clock=clock, key_prefix="crm-")
    billing = SimulatedSystem("billing", clock=clock, key_prefix="bil-")
    for email, name in CUSTOMERS:
        crm.create({"email": email, "name": name, "plan": "pro"})
        billing.create({"email": email, "full_name": name, "plan": "pro"})
    customers = SyncDefinition(
        name="customers",
        left=crm,
        right=billing,
        fields=[
            FieldMap(left="name", right="full_name", policy=recency()),
            FieldMap(left="plan", right="plan", policy=source_of_truth("right")),
        ],
        natural_key=NaturalKey(left="email", right="email"),
    )
    storage = SQLiteStorage(directory / "syncrecon.sqlite")
    handler = WebhookHandler(  # deferred (the default): store, answer 200, the worker applies
        [
            WebhookSource(
                name="crm",  # POST /webhooks/crm
                sync=customers,
                side=Side.LEFT,
                verifier=StandardWebhooksVerifier(secrets=[CRM_SECRET]),
                parser=GenericJsonParser(system="crm"),
                object_type="customer",
            ),
            WebhookSource(
                name="billing",  # POST /webhooks/billing
                sync=customers,
                side=Side.RIGHT,
                verifier=StandardWebhooksVerifier(secrets=[BILLING_SECRET]),
                parser=GenericJsonParser(system="billing"),
                object_type="customer",
            ),
        ],
        storage,
    )
    reconciler = Reconciler(customers, storage)
    # A cycle at start, then every 4 hours; an idle worker looks at the inbox every 0.2 s.
    worker = Worker(handler, reconciler, every=timedelta(hours=4), poll=0.2, coalesce=0.05)
    return Sync(crm, billing, storage, handler, reconciler, worker)


# --------------------------------------------------------------------------------------------
# The self-test: what a provider would send, and the checks. Not needed in your service.


def signed(secret: str, body: bytes, msg_id: str | None = None) -> dict[str, str]:
    """Standard Webhooks headers for ``body``, as the sender computes them."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp = str(int(time.time()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }


def change_body(system: SimulatedSystem, key: str, **changes: Any) -> bytes:
    """Make ``changes`` to a record, as a user would, and return the webhook body for them."""
    system.edit(key, **changes)
    modified = system.get(key).modified_at
    assert modified is not None
    data = {"id": key, "object_type": "customer", "changes": changes}
    return json.dumps(
        {"type": "customer.updated", "timestamp": modified.isoformat(), "data": data}
    ).encode()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def linked(sync: Sync) -> bool:
    """Whether the worker's first cycle has linked every customer."""
    return sync.storage.count_links(sync.reconciler.sync.name) == len(CUSTOMERS)


def self_test(host: str, base_url: str, sync: Sync) -> str:
    """Drive a running host over HTTP; return a one-line summary."""
    wait_until(lambda: linked(sync), "the first reconciliation cycle")
    crm_key, bil_key = sorted(sync.crm.records())[0], sorted(sync.billing.records())[0]
    with httpx.Client(base_url=base_url, timeout=10, trust_env=False) as client:
        started = time.monotonic()
        body = change_body(sync.crm, crm_key, name="Ada King")
        answer = client.post("/webhooks/crm", content=body, headers=signed(CRM_SECRET, body))
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"accepted": 1, "duplicates": 0}
        wait_until(
            lambda: sync.billing.get(bil_key).fields["full_name"] == "Ada King", "the fast loop"
        )
        took_ms = (time.monotonic() - started) * 1000
        unsigned = client.post("/webhooks/crm", content=body)
        assert unsigned.status_code == 401, unsigned.text
        report = client.post("/reconcile")
        assert report.status_code == 200, report.text
        assert sum(report.json()["writes"].values()) == 0, report.json()
    return (
        f"{host}: webhook applied to billing by the worker in {took_ms:.0f} ms;"
        " unsigned request 401; POST /reconcile wrote nothing"
    )


@contextlib.contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    """Serve a WSGI app with Werkzeug on 127.0.0.1 (an ephemeral port) in a thread."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log(self, type: str, message: str, *args: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def main() -> None:
    """The wiring without a server: the handler called directly, one worker round."""
    with tempfile.TemporaryDirectory() as directory:
        sync = build(Path(directory))
        try:
            sync.worker.run_once()  # the first cycle links the customers
            key, other = sorted(sync.crm.records())[0], sorted(sync.billing.records())[0]
            body = change_body(sync.crm, key, name="Ada King")
            request = WebhookRequest(
                method="POST",
                url="http://127.0.0.1/webhooks/crm",
                headers=signed(CRM_SECRET, body),
                body=body,
            )
            assert sync.handler.handle(request).status == 200
            report = sync.worker.run_once()  # drains the inbox: the change goes to billing
            assert report is not None
            assert report.outcomes == {"applied": 1}
            assert sync.billing.get(other).fields["full_name"] == "Ada King"
        finally:
            sync.close()
    print("shared wiring: a signed webhook, one worker round, the change in billing")


if __name__ == "__main__":
    main()
