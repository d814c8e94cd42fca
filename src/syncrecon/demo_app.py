"""The demo's two systems, kept between commands: what ``--app`` names after ``syncrecon demo``.

``python -m syncrecon demo`` simulates HubSpot and Salesforce in memory. Before it exits it
leaves two files side by side: the database (``./syncrecon-demo.sqlite`` unless ``--db`` says
otherwise) and the two systems' records (``./syncrecon-demo.systems.json``: the database's
name with the suffix ``.systems.json``). This module rebuilds the demo's sync definition from
them, so the command line can work the demo's queue and run its next cycle::

    python -m syncrecon queue --db syncrecon-demo.sqlite resolve 12 --take left \\
        --app syncrecon.demo_app:syncs
    python -m syncrecon worker syncrecon.demo_app:worker --once

Every write through a connector is saved to the systems file at once, so what ``queue
resolve`` writes is there for the next command. The database is the one the environment
variable ``SYNCRECON_DEMO_DB`` names, else ``./syncrecon-demo.sqlite`` (relative to the
current directory); ``syncrecon demo --db PATH`` prints its commands with the variable set.

Only the demo's files are read and written: the systems live in the JSON file, nothing is
sent anywhere.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from . import _codec
from ._clock import Clock, SystemClock
from ._exceptions import ConfigurationError
from ._models import Change, FieldInfo, Record, Side, WriteResult
from ._scenario import deal_sync, simulated_pair
from ._sync import SyncDefinition
from .testing import ManualClock, SimulatedSystem

if TYPE_CHECKING:
    from ._reconciler import CycleReport, Reconciler
    from .worker import Worker

__all__ = [
    "DEFAULT_DB",
    "ENV_VAR",
    "FORMAT",
    "DemoSystem",
    "database_path",
    "load_systems",
    "reconciler",
    "save_systems",
    "syncs",
    "systems_path",
    "worker",
]

DEFAULT_DB: Final = "syncrecon-demo.sqlite"
"""Where ``syncrecon demo`` keeps its database unless ``--db`` says otherwise."""

ENV_VAR: Final = "SYNCRECON_DEMO_DB"
"""The environment variable naming the demo's database (when it is not :data:`DEFAULT_DB`)."""

FORMAT: Final = "syncrecon-demo-systems/1"
"""The systems file's ``format`` entry."""

log = logging.getLogger("syncrecon.demo_app")


def database_path() -> Path:
    """The demo's database: ``$SYNCRECON_DEMO_DB``, else ``./syncrecon-demo.sqlite``."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DB)


def systems_path(db: str | os.PathLike[str]) -> Path:
    """The systems file that goes with the database ``db``: its suffix becomes
    ``.systems.json`` (``syncrecon-demo.sqlite`` -> ``syncrecon-demo.systems.json``)."""
    return Path(db).with_suffix(".systems.json")


class DemoSystem(SimulatedSystem):
    """A :class:`~syncrecon.testing.SimulatedSystem` whose accepted writes are saved at once.

    ``after_write`` runs after every ``write_records`` call (also one that failed part-way):
    :func:`load_systems` makes it save both systems to their file.
    """

    after_write: Callable[[], None] | None = None

    def write_records(self, changes: Sequence[Change]) -> Sequence[WriteResult]:
        try:
            return super().write_records(changes)
        finally:
            if self.after_write is not None:
                self.after_write()


def _next_id(system: SimulatedSystem) -> int:
    """The number the system gives its next record's key (read without using it up)."""
    n = next(system._ids)
    system._ids = itertools.count(n)
    return n


def _system_data(system: SimulatedSystem) -> dict[str, Any]:
    return {
        "name": system.name,
        "next_id": _next_id(system),
        "fields": [
            {"name": f.name, "type": f.type, "options": f.options, "required": f.required}
            for f in system._fields
        ],
        "records": [
            {
                "key": r.key,
                "fields": dict(r.fields),
                "modified_at": r.modified_at,
                "field_modified_at": None
                if r.field_modified_at is None
                else dict(r.field_modified_at),
            }
            for r in (system.get(k) for k in system._ordered())
        ],
    }


def save_systems(
    path: str | os.PathLike[str],
    left: SimulatedSystem,
    right: SimulatedSystem,
    *,
    database: str | os.PathLike[str],
    about: Mapping[str, Any] | None = None,
) -> None:
    """Write both systems' records and field descriptions to ``path`` (atomically).

    One record per line, so ``grep`` finds one. ``database`` is the database the systems go
    with (its file name is kept); ``about`` adds entries (the demo's seed, say).
    """
    target = Path(path)
    head = {**dict(about or {}), "format": FORMAT, "database": Path(database).name}
    parts = [_codec.dumps(head)[:-1] + ',"systems":{']
    for n, (side, system) in enumerate(((Side.LEFT, left), (Side.RIGHT, right))):
        data = _system_data(system)
        records = data.pop("records")
        parts.append(("," if n else "") + f'\n"{side.value}":' + _codec.dumps(data)[:-1])
        parts.append(',"records":[')
        parts.append(",".join("\n" + _codec.dumps(r) for r in records))
        parts.append("\n]}")
    parts.append("\n}}\n")
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text("".join(parts), encoding="utf-8")
    os.replace(tmp, target)


def _restore(system: SimulatedSystem, data: Mapping[str, Any]) -> None:
    system._records = {
        r["key"]: Record(
            key=r["key"],
            fields=r["fields"],
            modified_at=r["modified_at"],
            field_modified_at=r["field_modified_at"],
        )
        for r in data["records"]
    }
    system._order = None
    system._ids = itertools.count(int(data["next_id"]))
    system.set_fields([FieldInfo(**f) for f in data["fields"]])


def _as_demo_system(template: SimulatedSystem, clock: Clock) -> DemoSystem:
    """A :class:`DemoSystem` shaped like ``template`` (its name, key prefix and limits)."""
    caps = template.capabilities
    return DemoSystem(
        template.name,
        clock=clock,
        page_size=caps.page_size,
        max_read_batch=caps.max_read_batch,
        max_write_batch=caps.max_write_batch,
        incremental=caps.incremental,
        field_timestamps=caps.field_timestamps,
        key_prefix=template.key_prefix,
        idempotent_creates=caps.idempotent_creates,
        finds_created=caps.finds_created,
    )


def load_systems(
    path: str | os.PathLike[str], *, clock: Clock | None = None
) -> tuple[DemoSystem, DemoSystem]:
    """The HubSpot-like and Salesforce-like systems saved at ``path``; each write through
    either is saved back to ``path`` at once.

    :raises ConfigurationError: there is no such file, or it is not a demo systems file.
    """
    source = Path(path)
    try:
        data = _codec.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(
            f"no demo systems at {source}: run `python -m syncrecon demo` first, or set"
            f" {ENV_VAR} to the demo's database"
        ) from None
    except ValueError as exc:
        raise ConfigurationError(f"{source} is not a demo systems file: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigurationError(f"{source} is not a demo systems file (format {FORMAT})")
    clock = clock or SystemClock()
    left, right = (_as_demo_system(t, clock) for t in simulated_pair(ManualClock()))
    for side, system in ((Side.LEFT, left), (Side.RIGHT, right)):
        _restore(system, data["systems"][side.value])
    database = str(data["database"])
    about = {k: v for k, v in data.items() if k not in ("format", "database", "systems")}

    def save() -> None:
        save_systems(source, left, right, database=database, about=about)

    left.after_write = right.after_write = save
    return left, right


def _database() -> Path:
    db = database_path()
    if not db.is_file():
        raise ConfigurationError(
            f"no demo database at {db}: run `python -m syncrecon demo` first, or set"
            f" {ENV_VAR} to the demo's database"
        )
    return db


def syncs() -> list[SyncDefinition]:
    """The demo's sync definition over its saved systems (for ``queue resolve --app``)."""
    left, right = load_systems(systems_path(database_path()))
    return [deal_sync(left, right)]


def reconciler() -> Reconciler:
    """A :class:`~syncrecon.Reconciler` of the demo's sync over its database and systems."""
    from ._reconciler import Reconciler
    from .storage.sqlite import SQLiteStorage

    db = _database()
    (sync,) = syncs()
    return Reconciler(sync, SQLiteStorage(db))


def worker() -> Worker:
    """A :class:`~syncrecon.worker.Worker` that runs the demo's next cycle (every four hours
    when left running); ``syncrecon worker syncrecon.demo_app:worker --once`` runs one."""
    from .worker import Worker

    cycles = reconciler()
    names = {"left": cycles.sync.left.name, "right": cycles.sync.right.name}

    def log_report(report: CycleReport) -> None:
        log.info("%s", report.describe(names))

    return Worker(reconciler=cycles, on_report=log_report)
