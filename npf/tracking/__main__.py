"""``python -m npf.tracking sync RESULTS_DIR``: send the spools a store outage left behind."""

from __future__ import annotations

import argparse
import sys

from npf.tracking.store import tracking_uri
from npf.tracking.sync import sync_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m npf.tracking", description="send spooled MLflow records (kept while the store was down)"
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sync", help="send every *.spool.jsonl under RESULTS_DIR")
    s.add_argument("results_dir", nargs="?", default="results")
    s.add_argument("--uri", help="tracking URI (default: MLFLOW_TRACKING_URI, else sqlite under RESULTS_DIR)")
    args = p.parse_args(argv)
    _, pending = sync_dir(args.results_dir, args.uri or tracking_uri(args.results_dir))
    return 1 if pending else 0


if __name__ == "__main__":
    sys.exit(main())
