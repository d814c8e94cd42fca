"""The host examples (FastAPI, Flask, Django), driven past their own self-test.

``tests/test_examples.py`` runs each ``examples/*.py`` as a script, which is its self-test: a
signed webhook applied by the worker, an unsigned one answered 401, ``POST /reconcile``
writing nothing. Here each example's app is built from the example module itself and served
on 127.0.0.1, with its worker, for what the self-test leaves out: a provider's retry of a
delivery (``duplicates: 1``, applied once), webhooks from both systems, the rejections (wrong
secret 401, unknown source 404, ``GET`` 405), the outcomes the worker counted in storage, a
change whose webhook was lost and that ``POST /reconcile`` repairs, and a 409 while another
process holds the cycle's lease.

FastAPI and Flask run in this process; Django in a subprocess, since its settings are global
to a process.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TIMEOUT = 60


@pytest.fixture
def examples(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Import an example module by name (as ``python examples/<name>.py`` would find it)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module


def keys(sync: Any, email: str) -> tuple[str, str]:
    """The customer's key in the CRM and in billing."""

    def key(system: Any) -> str:
        return next(k for k, r in system.records().items() if r.fields["email"] == email)

    return key(sync.crm), key(sync.billing)


def exercise(base_url: str, sync: Any) -> dict[str, Any]:
    """Drive a running host; return what was seen, JSON-ready (the Django driver prints it)."""
    shared = sys.modules["_shared"]
    shared.wait_until(lambda: shared.linked(sync), "the first reconciliation cycle")
    ada, alan = keys(sync, "ada@example.com"), keys(sync, "alan@example.com")
    seen: dict[str, Any] = {}
    with httpx.Client(base_url=base_url, timeout=10, trust_env=False) as client:
        # The CRM renames Ada; the provider delivers the webhook twice (a retry).
        body = shared.change_body(sync.crm, ada[0], name="Ada King")
        headers = shared.signed(shared.CRM_SECRET, body)
        seen["deliveries"] = [
            client.post("/webhooks/crm", content=body, headers=headers).json() for _ in range(2)
        ]
        # Billing, the plan's source of truth, upgrades Alan.
        upgrade = shared.change_body(sync.billing, alan[1], plan="enterprise")
        answer = client.post(
            "/webhooks/billing",
            content=upgrade,
            headers=shared.signed(shared.BILLING_SECRET, upgrade),
        )
        seen["billing delivery"] = answer.json()
        shared.wait_until(
            lambda: (
                sync.billing.get(ada[1]).fields["full_name"] == "Ada King"
                and sync.crm.get(alan[0]).fields["plan"] == "enterprise"
            ),
            "the fast loop, both ways",
        )
        seen["rejections"] = {
            "wrong secret": client.post(
                "/webhooks/crm", content=body, headers=shared.signed(shared.BILLING_SECRET, body)
            ).status_code,
            "unknown source": client.post(
                "/webhooks/erp", content=body, headers=shared.signed(shared.CRM_SECRET, body)
            ).status_code,
            "GET": client.get("/webhooks/crm").status_code,
        }
        # Billing renames Alan and the webhook never arrives: the slow loop repairs it.
        sync.billing.edit(alan[1], full_name="Alan M. Turing")
        seen["repair"] = client.post("/reconcile").json()
        seen["after repair"] = client.post("/reconcile").json()
        # Another process is running a cycle of this sync.
        lease, now = sync.reconciler.lease_name, datetime.now(UTC)
        assert sync.storage.acquire_lease(lease, "another-process", timedelta(minutes=1), now)
        try:
            seen["lease held"] = client.post("/reconcile").status_code
        finally:
            sync.storage.release_lease(lease, "another-process")
    seen["crm name"] = sync.crm.get(alan[0]).fields["name"]
    outcomes: dict[str, int] = {}
    for labels, amount in sync.storage.counter_totals("webhook_events"):
        outcomes[labels["outcome"]] = outcomes.get(labels["outcome"], 0) + amount
    seen["outcomes"] = outcomes
    return seen


def check(seen: dict[str, Any], *, get_reaches_handler: bool = True) -> None:
    assert seen["deliveries"] == [
        {"accepted": 1, "duplicates": 0},
        {"accepted": 0, "duplicates": 1},
    ]
    assert seen["billing delivery"] == {"accepted": 1, "duplicates": 0}
    assert seen["rejections"] == {"wrong secret": 401, "unknown source": 404, "GET": 405}
    assert seen["repair"]["writes"] == {"left": 1, "right": 0}  # by side: crm is left
    assert seen["repair"]["auto_resolved"] == {"recency": 1}
    assert sum(seen["after repair"]["writes"].values()) == 0
    assert seen["after repair"]["discrepancies_found"] == 0
    assert seen["lease held"] == 409
    assert seen["crm name"] == "Alan M. Turing"
    # Each delivery has one counted outcome: the retry is a duplicate, not a second write.
    # Every rejection the handler sees is counted; Flask's route answers a GET itself.
    rejected = 3 if get_reaches_handler else 2
    assert seen["outcomes"] == {"applied": 2, "duplicate": 1, "rejected": rejected}


@contextlib.contextmanager
def built(examples: Any, directory: Path) -> Iterator[Any]:
    sync = examples("_shared").build(directory)
    try:
        yield sync
    finally:
        sync.close()


def test_fastapi_host(examples: Any, tmp_path: Path) -> None:
    module: ModuleType = examples("fastapi_app")
    with built(examples, tmp_path) as sync:
        with module.serve(module.create_app(sync)) as base_url:  # the lifespan starts the worker
            seen = exercise(base_url, sync)
        check(seen)


def test_flask_host(examples: Any, tmp_path: Path) -> None:
    module: ModuleType = examples("flask_app")
    with built(examples, tmp_path) as sync:
        sync.worker.start()
        try:
            with examples("_shared").serve_wsgi(module.create_app(sync)) as base_url:
                seen = exercise(base_url, sync)
        finally:
            sync.worker.stop()
        check(seen, get_reaches_handler=False)


DJANGO_DRIVER = textwrap.dedent(
    """
    import json, sys

    sys.path[:0] = [sys.argv[1], sys.argv[2]]
    import django_app  # configures Django for this process
    from test_host_examples import exercise

    sync = django_app.SYNC
    sync.worker.start()
    try:
        with django_app.serve_wsgi(django_app.application) as base_url:
            seen = exercise(base_url, sync)
    finally:
        sync.worker.stop()
        sync.close()
        django_app.DATA.cleanup()
    print(json.dumps(seen))
    """
)


def test_django_host(tmp_path: Path) -> None:
    pytest.importorskip("django")
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", DJANGO_DRIVER, str(EXAMPLES), str(ROOT / "tests")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    check(json.loads(result.stdout.strip().splitlines()[-1]))
