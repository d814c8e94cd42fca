"""The operator queue: page through, show, resolve, dismiss and assign escalated discrepancies,
one at a time or in bulk.

Reading the queue needs only the database. Resolving a field writes the chosen value through
the connectors, so it needs the sync definitions too (passed in, or named by import path on
the command line, as the worker is)::

    from syncrecon.queue import OperatorQueue, QueueFilter

    queue = OperatorQueue(storage, [deals_sync])
    page = queue.page(category="deal_value", search="acme", limit=50)
    print(f"{page.total} items")
    for item in page.items:
        print(queue.show(item.id))         # values, base, why, history, a suggestion
    queue.resolve(item_id, take="left", by="ada")
    where = QueueFilter(sync="deals", field="stage")
    print(queue.preview(filter=where, take="right"))   # what would be written; nothing is
    queue.resolve_many(filter=where, take="right", by="ada")

Resolving has the reconciler's safety: both records are read again first; when a side no
longer holds the value the item recorded (and not the chosen value either), nothing is
written and the item goes back to review. Otherwise the chosen value (in the left
vocabulary) is written to the sides that do not hold it yet, and one storage transaction then
moves the base, closes the item with its resolution and time, and remembers the writes in the
echo ledger so the fast loop knows their webhooks. A failed write leaves the item active, the
error in its note and the base where it was.

Errors (part of syncrecon's one error hierarchy)::

    SyncReconError
    ├── QueueError (ValueError)             the operation cannot be done as asked
    │   └── ItemClosedError                 the item is resolved or dismissed already
    └── ItemNotFoundError (LookupError)     no queue item has that id

``python -m syncrecon queue --db PATH list|show|resolve|dismiss|assign`` is the command line
(the actions take several ids, or a filter).
"""

from __future__ import annotations

# The public surface, in the order the API reference shows it (so not sorted).
# isort: off
from ._api import OperatorQueue
from ._pages import ItemPage, QueueFilter, Facets
from ._resolve import Resolution, ResolutionOutcome, PlannedResolution
from ._triage import Triage, RuleTriage, Suggestion, UseValue
from ._items import DEFAULT_STATUSES, is_record_level, group_key
from ._views import ItemView, display_value, item_data, read_value
from ._loader import load_syncs
from .._exceptions import QueueError, ItemClosedError, ItemNotFoundError
# isort: on

# The command line's plumbing is not public (``syncrecon.__main__`` takes it from ``._cli``);
# these two names stay importable from here for code written before the queue was a package.
from ._cli import register_cli as register_cli
from ._cli import run_cli as run_cli

__all__ = [
    "DEFAULT_STATUSES",
    "Facets",
    "ItemClosedError",
    "ItemNotFoundError",
    "ItemPage",
    "ItemView",
    "OperatorQueue",
    "PlannedResolution",
    "QueueError",
    "QueueFilter",
    "Resolution",
    "ResolutionOutcome",
    "RuleTriage",
    "Suggestion",
    "Triage",
    "UseValue",
    "display_value",
    "group_key",
    "is_record_level",
    "item_data",
    "load_syncs",
    "read_value",
]
