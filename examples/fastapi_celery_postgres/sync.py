"""The sync of the FastAPI + Celery + PostgreSQL example: everything every process builds.

The web processes (``uvicorn web:create_app --factory --workers 2``), the Celery workers
(``celery -A tasks worker``) and beat (``celery -A tasks beat``) all import this module; each
process that needs the objects calls :func:`build` once, so it opens its own connections. Its
state lives in one PostgreSQL database: syncrecon's storage in the schema
``$SYNCRECON_SCHEMA`` (``syncrecon``), and, for the demo, the two "SaaS systems" as tables in
the schema ``<that>_demo``, reached by :class:`TableSystem`, a small connector. Replace those
with your connectors (HubSpot, Salesforce, your billing API).

Settings (environment):

- ``SYNCRECON_DATABASE_URL``: the PostgreSQL database
  (``postgresql://syncrecon:syncrecon@127.0.0.1:5432/syncrecon``);
- ``SYNCRECON_SCHEMA``: syncrecon's schema in it (``syncrecon``);
- ``CRM_WEBHOOK_SECRET``, ``BILLING_WEBHOOK_SECRET``: the senders' Standard Webhooks secrets.

``python sync.py seed`` creates the demo systems' tables and two customers in each.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from syncrecon import (
    Capabilities,
    Change,
    ChangeOp,
    FieldInfo,
    FieldMap,
    NaturalKey,
    Page,
    Reconciler,
    Record,
    Side,
    SyncDefinition,
    WriteResult,
    recency,
    source_of_truth,
)
from syncrecon.storage.postgres import PostgresStorage
from syncrecon.webhooks import (
    GenericJsonParser,
    StandardWebhooksVerifier,
    WebhookHandler,
    WebhookSource,
)

DATABASE_URL = os.environ.get(
    "SYNCRECON_DATABASE_URL", "postgresql://syncrecon:syncrecon@127.0.0.1:5432/syncrecon"
)
SCHEMA = os.environ.get("SYNCRECON_SCHEMA", "syncrecon")
DEMO_SCHEMA = f"{SCHEMA}_demo"
CRM_SECRET = os.environ.get(
    "CRM_WEBHOOK_SECRET", "whsec_" + base64.b64encode(b"crm: a webhook secret of 32 bytes").decode()
)
BILLING_SECRET = os.environ.get(
    "BILLING_WEBHOOK_SECRET",
    "whsec_" + base64.b64encode(b"billing: another secret, 32 bytes").decode(),
)
CUSTOMERS = [("ada@example.com", "Ada Lovelace"), ("alan@example.com", "Alan Turing")]


# -- a stand-in for a SaaS system: records in a PostgreSQL table ------------------------------


class TableSystem:
    """A connector over one table (``key``, ``fields`` as JSON, ``modified_at``).

    Every process reaches the same records, as with a real provider's API. One connection per
    call keeps it short; a real connector would use an HTTP client (see ``syncrecon.http``).
    """

    capabilities = Capabilities(page_size=100, describes_fields=False)

    def __init__(self, name: str, *, url: str = DATABASE_URL, schema: str = DEMO_SCHEMA) -> None:
        self.name = name
        self.url = url
        self.table = sql.Identifier(schema, name)
        self.schema = schema

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True)

    def setup(self) -> None:
        with self._connect() as conn:
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (key text PRIMARY KEY, fields jsonb NOT NULL,"
                    " modified_at timestamptz NOT NULL DEFAULT clock_timestamp())"
                ).format(self.table)
            )

    @staticmethod
    def _record(row: tuple[str, dict[str, Any], datetime]) -> Record:
        return Record(key=row[0], fields=row[1], modified_at=row[2])

    # The connector protocol.

    def list_records(self, *, since: datetime | None, cursor: str | None) -> Page:
        query = sql.SQL(
            "SELECT key, fields, modified_at FROM {} WHERE key > %s ORDER BY key LIMIT %s"
        ).format(self.table)
        with self._connect() as conn:
            rows = conn.execute(query, (cursor or "", self.capabilities.page_size)).fetchall()
        full = len(rows) == self.capabilities.page_size
        return Page(
            records=[self._record(r) for r in rows], next_cursor=rows[-1][0] if full else None
        )

    def read_records(self, keys: Sequence[str]) -> Sequence[Record]:
        query = sql.SQL("SELECT key, fields, modified_at FROM {} WHERE key = ANY(%s)")
        with self._connect() as conn:
            rows = conn.execute(query.format(self.table), (list(keys),)).fetchall()
        return [self._record(r) for r in rows]

    def write_records(self, changes: Sequence[Change]) -> Sequence[WriteResult]:
        results = []
        with self._connect() as conn:
            for change in changes:
                if change.op is ChangeOp.UPDATE:
                    query = sql.SQL(
                        "UPDATE {} SET fields = fields || %s, modified_at = clock_timestamp()"
                        " WHERE key = %s RETURNING modified_at"
                    )
                    row = conn.execute(
                        query.format(self.table), (Jsonb(dict(change.fields)), change.key)
                    ).fetchone()
                    if row is None:
                        results.append(WriteResult.failure(change, "no such record"))
                    else:
                        results.append(WriteResult.success(change, modified_at=row[0]))
                else:  # this sync neither creates nor deletes
                    results.append(WriteResult.failure(change, f"{change.op.value} not allowed"))
        return results

    def describe_fields(self) -> Sequence[FieldInfo]:
        return []

    # What a user of the system does (the demo and its test).

    def create(self, key: str, fields: dict[str, Any]) -> None:
        query = sql.SQL("INSERT INTO {} (key, fields) VALUES (%s, %s) ON CONFLICT DO NOTHING")
        with self._connect() as conn:
            conn.execute(query.format(self.table), (key, Jsonb(fields)))

    def edit(self, key: str, **fields: Any) -> datetime:
        """Change fields as a user would; return the record's new modification time."""
        query = sql.SQL(
            "UPDATE {} SET fields = fields || %s, modified_at = clock_timestamp()"
            " WHERE key = %s RETURNING modified_at"
        )
        with self._connect() as conn:
            row = conn.execute(query.format(self.table), (Jsonb(fields), key)).fetchone()
        assert row is not None, f"no record {key!r} in {self.name}"
        when: datetime = row[0]
        return when

    def fields(self, key: str) -> dict[str, Any]:
        [record] = self.read_records([key])
        return dict(record.fields)


# -- the sync ----------------------------------------------------------------------------------

crm = TableSystem("crm")
billing = TableSystem("billing")
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


def build() -> tuple[Reconciler, WebhookHandler]:
    """The reconciler and the webhook handler, over a storage of this process's own.

    ``register_tasks(app, "sync:build")`` calls it once in each Celery worker process; the
    web app calls it once in each uvicorn worker.
    """
    storage = PostgresStorage(DATABASE_URL, schema=SCHEMA, max_size=4)
    handler = WebhookHandler(  # deferred (the default): store and answer; Celery applies
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
    return Reconciler(customers, storage), handler


def seed() -> None:
    """The demo systems' tables, with the same customers in both (idempotent)."""
    for system in (crm, billing):
        system.setup()
    for n, (email, name) in enumerate(CUSTOMERS, start=1):
        crm.create(f"crm-{n}", {"email": email, "name": name, "plan": "pro"})
        billing.create(f"bil-{n}", {"email": email, "full_name": name, "plan": "pro"})


# -- what a provider sends (the demo and its test) ---------------------------------------------


def webhook(
    system: TableSystem, secret: str, key: str, **changes: Any
) -> tuple[bytes, dict[str, str]]:
    """Make ``changes`` to a record as a user would; return the signed webhook for them."""
    modified = system.edit(key, **changes)
    data = {"id": key, "object_type": "customer", "changes": changes}
    body = json.dumps(
        {"type": "customer.updated", "timestamp": modified.isoformat(), "data": data}
    ).encode()
    msg_id, stamp = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    mac = hmac.new(
        base64.b64decode(secret.removeprefix("whsec_")),
        f"{msg_id}.{stamp}.".encode() + body,
        hashlib.sha256,
    ).digest()
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }
    return body, headers


if __name__ == "__main__":
    if sys.argv[1:] != ["seed"]:
        sys.exit("usage: python sync.py seed")
    seed()
    print(f"seeded {DEMO_SCHEMA}.crm and {DEMO_SCHEMA}.billing")
