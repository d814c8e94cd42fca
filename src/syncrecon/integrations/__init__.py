"""Glue for running syncrecon inside other frameworks (each module needs its own extra).

- :mod:`syncrecon.integrations.apscheduler`: the reconciliation cycle and the fast loop's drain
  as APScheduler 3 jobs (``pip install "syncrecon[apscheduler]"``).
- :mod:`syncrecon.integrations.celery`: the cycle, the drain and pruning as Celery tasks, with
  beat schedule entries (``pip install "syncrecon[celery]"``).

Nothing here is imported by ``import syncrecon``: import the module you use.
"""
