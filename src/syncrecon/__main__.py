"""The command line: ``python -m syncrecon demo | bench | worker | dashboard | queue``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from ._app import APP_PATH_FORM
from ._exceptions import AppLoadError, SyncReconError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m syncrecon`` and the ``syncrecon`` script."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (``... | head``): not an error worth a traceback. Point stdout
        # at /dev/null so the interpreter's last flush does not fail on it again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="syncrecon",
        description="Keep records in two SaaS systems in agreement, and prove it.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="two simulated CRMs drift; both loops keep them in agreement",
        description="Simulate a day of two CRMs drifting apart while the fast loop and the"
        " reconciliation cycles keep them in agreement, then print a report. The database and"
        " the two systems' records are kept for the dashboard and queue commands.",
        epilog="afterwards: python -m syncrecon dashboard --db syncrecon-demo.sqlite;"
        " python -m syncrecon queue --db syncrecon-demo.sqlite list (the report prints the"
        " exact commands)",
    )
    demo.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the report"
    )
    demo.add_argument(
        "--db",
        metavar="PATH",
        help="keep the SQLite database here (default: ./syncrecon-demo.sqlite), and the"
        " systems' records next to it; both are replaced on every run",
    )
    demo.add_argument(
        "--seed", type=int, default=7, help="the same seed gives the same run (default: 7)"
    )
    demo.add_argument(
        "--records", type=int, default=3000, metavar="N", help="deals per system (default: 3000)"
    )

    bench = commands.add_parser("bench", help="measure a reconciliation at scale")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--records", type=int, default=100_000, help="records per side")
    bench.add_argument("--seed", type=int, default=1, help="make the run reproducible")
    bench.add_argument("--drift", type=float, default=0.01, help="share of records drifted")
    bench.add_argument("--db", help="SQLite path (default: a temporary file)")
    bench.add_argument(
        "--deepdiff-sample", type=int, default=2000, help="pairs DeepDiff compares (scaled)"
    )
    bench.add_argument(
        "--diffsync",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time DiffSync's no-op sync at the same size (default: when diffsync is installed)",
    )
    for part, what in (
        ("served", "the webhook app served by uvicorn and driven by wrk, against a bare app"),
        ("drain", "the PostgreSQL inbox drained by 1, 2 and 4 worker processes"),
        ("sharded", "a steady full cycle in 2 shards against 1"),
    ):
        bench.add_argument(
            f"--{part}",
            action=argparse.BooleanOptionalAction,
            default=True,
            help=f"{what} (default: on)",
        )
    bench.add_argument(
        "--postgres-url",
        metavar="URL",
        help="the server of the PostgreSQL figures (default: SYNCRECON_BENCH_POSTGRES_URL, else"
        " a private server from the machine's PostgreSQL binaries)",
    )
    bench.add_argument(
        "--scaling",
        type=_sizes,
        default=(),
        metavar="N,N,...",
        help="also run a first and a steady cycle at each size, each in its own process (slow)",
    )

    worker = commands.add_parser(
        "worker",
        help="drain the webhook inbox and run cycles",
        description="Drain the webhook inbox, run the reconciliation cycles on schedule and"
        f" prune old rows. The app is named by its import path, {APP_PATH_FORM}; the current"
        " directory is importable.",
        epilog="examples: syncrecon worker myapp.sync:worker;"
        " syncrecon worker syncrecon.demo_app:worker --once (the demo's next cycle)",
    )
    worker.add_argument(
        "app",
        metavar=APP_PATH_FORM,
        help=f"import path ({APP_PATH_FORM}, e.g. myapp.sync:worker) of a Worker,"
        " WebhookHandler or Reconciler, or of a function without arguments returning one",
    )
    worker.add_argument("--once", action="store_true", help="one round, then exit")

    from .dashboard._cli import register_cli as register_dashboard
    from .queue._cli import register_cli as register_queue

    register_dashboard(commands)
    register_queue(commands)

    args = parser.parse_args(argv)
    if args.command == "dashboard":
        from .dashboard._cli import run_cli as run_dashboard

        return run_dashboard(args)
    if args.command == "queue":
        from .queue._cli import run_cli as run_queue

        return run_queue(args)
    if args.command == "worker":
        import logging

        from .worker import load

        try:
            runner = load(args.app)
        except AppLoadError as exc:
            print(f"syncrecon worker: {exc}", file=sys.stderr)
            return 2
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        if args.once:
            try:
                report = runner.run_once()
            except SyncReconError as exc:
                print(f"syncrecon worker: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 1
            print(json.dumps({"processed": report.processed if report else 0}))
            return 0
        try:
            runner.run_forever()
        except KeyboardInterrupt:
            runner.stop()
        return 0
    if args.command == "demo":
        from ._demo import run_cli as run_demo

        return run_demo(args)
    missing = _missing("deepdiff", "standardwebhooks", "jwt", "cryptography")
    if missing:
        print(
            f"syncrecon bench: needs the bench extra ({', '.join(missing)} missing):"
            " pip install 'syncrecon[bench]'",
            file=sys.stderr,
        )
        return 2
    diffsync = args.diffsync
    if diffsync is not False and _missing("diffsync"):
        if diffsync:
            print(
                "syncrecon bench: --diffsync needs the bench extra (diffsync missing):"
                " pip install 'syncrecon[bench]'",
                file=sys.stderr,
            )
            return 2
        print(
            "syncrecon bench: noop_cycle_vs_diffsync skipped (diffsync missing):"
            " pip install 'syncrecon[bench]'",
            file=sys.stderr,
        )
        diffsync = False
    from ._bench import run_bench

    result = run_bench(
        records=args.records,
        seed=args.seed,
        drift=args.drift,
        db=args.db,
        deepdiff_sample=args.deepdiff_sample,
        diffsync=diffsync is not False,
        scaling=args.scaling,
        served=args.served,
        drain=args.drain,
        sharded=args.sharded,
        postgres_url=args.postgres_url,
    )
    print(json.dumps(result, sort_keys=True, indent=None if args.json else 2))
    return 0


def _sizes(text: str) -> tuple[int, ...]:
    """``--scaling``'s comma-separated record counts."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of record counts: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"record counts must be positive: {text!r}")
    return sizes


def _missing(*modules: str) -> list[str]:
    """The modules of ``modules`` that cannot be imported here."""
    import importlib.util

    return [m for m in modules if importlib.util.find_spec(m) is None]


if __name__ == "__main__":
    sys.exit(main())
