"""Both loops in a Flask app: a webhook route, a worker thread, an admin reconcile endpoint.

- The fast loop: ``flask_view(handler)`` answers providers at ``/webhooks/<source>`` once their
  events are stored; the worker, a background thread, applies them within a second.
- The slow loop: the same worker runs a reconciliation cycle at start and every 4 hours, and
  ``POST /reconcile`` runs one now and answers its report.

Flask has no startup hook, so whoever starts the process starts the worker: ``main()`` here, a
``post_fork`` hook under gunicorn, or a process of its own (``python -m syncrecon worker
myapp.sync:worker``). Run as a script, it serves itself on 127.0.0.1 with Werkzeug, sends a
signed webhook, an unsigned one and a ``POST /reconcile``, checks the answers, and exits 0.
"""

import tempfile
from pathlib import Path
from typing import Any

from _shared import Sync, build, self_test, serve_wsgi
from flask import Flask

from syncrecon import LeaseHeldError
from syncrecon.webhooks.wsgi import flask_view


def create_app(sync: Sync) -> Flask:
    """The app. Your own routes go next to the two below."""
    app = Flask(__name__)
    # Or mount the WSGI callable, as the FastAPI example mounts the ASGI one:
    # app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/webhooks": WebhookWSGI(handler)})
    app.add_url_rule("/webhooks/<source>", view_func=flask_view(sync.handler), methods=["POST"])

    @app.post("/reconcile")  # an admin endpoint: put your own authentication in front of it
    def reconcile() -> tuple[dict[str, Any], int]:
        try:
            return sync.reconciler.run_cycle().to_dict(), 200
        except LeaseHeldError:
            return {"error": "a cycle of this sync is already running"}, 409

    return app


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        sync = build(Path(directory))
        # Drains the inbox and outbox, and runs the scheduled cycles, in a daemon thread.
        sync.worker.start()
        try:
            with serve_wsgi(create_app(sync)) as base_url:
                summary = self_test("flask", base_url, sync)
        finally:
            sync.worker.stop()  # the round in progress finishes first
            sync.close()
    print(summary)


if __name__ == "__main__":
    main()
