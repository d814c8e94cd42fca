"""One OS process of the multi-process claim test (tests/storage/test_storage_postgres.py).

    python tests/storage/postgres_claim_worker.py URL SCHEMA NAME OUT

Claims events of the shared inbox until none is pending, marks each claim done (fenced by its
claim) and writes what it claimed to OUT, one JSON line per claim: the worker, the claimed
event ids and their records.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta

from syncrecon.storage import Step
from syncrecon.storage.postgres import PostgresStorage


def main(url: str, schema: str, name: str, out: str) -> None:
    store = PostgresStorage(url, schema=schema, max_size=2)
    idle = 0
    with store, open(out, "w", encoding="utf-8") as sink:
        while idle < 20:
            now = datetime.now(UTC)
            claimed = store.claim_events(name, limit=3, now=now, lease=timedelta(minutes=10))
            if not claimed:
                idle += 1
                time.sleep(0.01)
                continue
            idle = 0
            sink.write(
                json.dumps({"worker": name, "events": [[e.id, e.record] for e in claimed]}) + "\n"
            )
            sink.flush()
            time.sleep(0.002)  # hold the claim a moment, as a real worker would
            store.commit(
                Step(
                    at=now,
                    events_done=[(e.id, "applied", None) for e in claimed if e.id is not None],
                    claim_owner=name,
                )
            )


if __name__ == "__main__":
    main(*sys.argv[1:5])
