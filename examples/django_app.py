"""Both loops in a Django project (one file): a webhook view, a worker thread, a reconcile view.

- The fast loop: ``django_view(handler)`` answers providers at ``/webhooks/<source>`` once
  their events are stored; the worker, a background thread, applies them within a second.
- The slow loop: the same worker runs a reconciliation cycle at start and every 4 hours, and
  ``POST /reconcile`` runs one now and answers its report.

In a project of several files, ``SYNC`` lives in ``myapp/sync.py``, the two paths go into
``urls.py``, and the worker runs as a process of its own (``python -m syncrecon worker
myapp.sync:worker``) or starts in your ``AppConfig.ready()``. Run as a script, it serves its
WSGI application on 127.0.0.1 with Werkzeug, sends a signed webhook, an unsigned one and a
``POST /reconcile``, checks the answers, and exits 0.
"""

import tempfile
from pathlib import Path

import django
from _shared import build, self_test, serve_wsgi
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from syncrecon import LeaseHeldError
from syncrecon.webhooks.wsgi import django_view

settings.configure(
    DEBUG=False,
    SECRET_KEY="an-example-only-secret-key-replace-it-with-your-own",
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,  # the urlpatterns below
    MIDDLEWARE=[
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",  # the webhook view is exempt: it is signed
    ],
)
django.setup()

DATA = tempfile.TemporaryDirectory(prefix="syncrecon-")  # yours: a path from your settings
SYNC = build(Path(DATA.name))


@csrf_exempt  # an admin endpoint for scripts: put your own authentication in front of it
@require_POST
def reconcile(request: HttpRequest) -> JsonResponse:
    try:
        report = SYNC.reconciler.run_cycle()
    except LeaseHeldError:
        return JsonResponse({"error": "a cycle of this sync is already running"}, status=409)
    return JsonResponse(report.to_dict())


urlpatterns = [
    path("webhooks/<str:source>", django_view(SYNC.handler)),
    path("reconcile", reconcile),
]
application = get_wsgi_application()


def main() -> None:
    # Drains the inbox and outbox, and runs the scheduled cycles, in a daemon thread.
    SYNC.worker.start()
    try:
        with serve_wsgi(application) as base_url:
            summary = self_test("django", base_url, SYNC)
    finally:
        SYNC.worker.stop()  # the round in progress finishes first
        SYNC.close()
        DATA.cleanup()
    print(summary)


if __name__ == "__main__":
    main()
