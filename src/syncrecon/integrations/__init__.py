"""Glue for running syncrecon inside other frameworks (each module needs its own extra).

- :mod:`syncrecon.integrations.apscheduler`: the reconciliation cycle and the fast loop's drain
  as APScheduler 3 jobs (``pip install "syncrecon[apscheduler]"``).

Nothing here is imported by ``import syncrecon``: import the module you use.
"""
