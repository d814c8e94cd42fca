"""One reconciliation cycle, one module per step, in the order a cycle runs them.

Each step is a class extending the one before, so a later step calls an earlier one's methods
(never the reverse) and :class:`_Cycle` is all of them:

0. ``_state``: the cycle's attributes, its lease and heartbeat, commits, queue items, timings;
1. ``_read``: the mode, the listings of both systems, staging, the reads by key;
2. ``_match``: links by natural key, the mass-delete guard, deletes and creates planned;
3. ``_decide``: the schema check, every linked pair's fields by their policies, the plans;
4. ``_write``: claims, re-reads, the write batches, echoes, the outcomes committed;
5. ``_report``: the :class:`CycleReport` and its counters;

and ``_run``, the driver: :meth:`_Cycle.run` takes the lease and runs the steps in that order.
:class:`~syncrecon.Reconciler` (in ``syncrecon._reconciler``) is the public front door.
"""

from ._report import CycleReport
from ._run import _Cycle
from ._state import _Heartbeat

__all__ = ["CycleReport", "_Cycle", "_Heartbeat"]
