"""Loading the host's sync definitions by import path, as the worker loads its app."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .._app import import_app
from .._exceptions import AppLoadError
from .._sync import SyncDefinition


def load_syncs(path: str) -> list[SyncDefinition]:
    """The sync definitions behind ``"package.module:attribute"`` (as the worker loads).

    The attribute may be a :class:`~syncrecon.SyncDefinition`, a
    :class:`~syncrecon.Reconciler` (its sync), a :class:`~syncrecon.webhooks.WebhookHandler`
    (its sources' syncs), a :class:`~syncrecon.worker.Worker` (both), an iterable of sync
    definitions, or a callable without arguments that returns one of those.

    The current directory is importable (as for the worker).

    :raises AppLoadError: when the path cannot be imported or names something else.
    """
    from .._reconciler import Reconciler
    from ..webhooks._handler import WebhookHandler
    from ..worker import Worker

    known = (SyncDefinition, Reconciler, WebhookHandler, Worker)
    target = import_app(path, keep=known)

    def from_handler(handler: WebhookHandler) -> list[SyncDefinition]:
        return [src.sync for src in handler.sources.values()]

    found: list[SyncDefinition]
    if isinstance(target, SyncDefinition):
        found = [target]
    elif isinstance(target, Reconciler):
        found = [target.sync]
    elif isinstance(target, WebhookHandler):
        found = from_handler(target)
    elif isinstance(target, Worker):
        found = from_handler(target.handler) if target.handler is not None else []
        if target.scheduler is not None:
            found.append(target.scheduler.reconciler.sync)
    elif isinstance(target, Iterable) and not isinstance(target, str | bytes | Mapping):
        found = list(target)
        if not all(isinstance(s, SyncDefinition) for s in found):
            raise AppLoadError(f"{path!r} holds something other than sync definitions")
    else:
        raise AppLoadError(
            f"{path!r} is not a SyncDefinition, Reconciler, WebhookHandler, Worker or an"
            f" iterable of sync definitions (nor a factory of one): {type(target).__name__}"
        )
    unique: dict[int, SyncDefinition] = {id(s): s for s in found}
    return list(unique.values())
