"""Save chosen hall-of-fame entries of a finished run to a loss store, with provenance.

A search saves its own best entry (``save_best``) when it beats the baseline on
the aggregate; this script saves others by hand, e.g. the entries of a run with
``aggregate = "min"`` that tie the baseline on one task and beat it elsewhere:

    python experiments/ship_winners.py experiments/runs/discovery_min --ranks 3,4 --directory losses/discovered

Each entry is read from the run's ``hall_of_fame.csv`` (ranks as printed
there), with the config, seeds and run id from the run directory, and saved
with :func:`lossforge.losses.store.save_discovered` (stable name from the
canonical form; saving the same loss twice writes nothing).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--ranks", required=True, help="comma-separated hall-of-fame ranks, e.g. 1,3")
    ap.add_argument("--directory", default=None, help="store directory (default: LOSSFORGE_STORE or ~/.lossforge)")
    args = ap.parse_args(argv)

    from lossforge.losses.store import save_discovered
    from lossforge.search import Entry, SearchConfig
    from lossforge.tasks import get as get_task

    run_dir = Path(args.run_dir)
    config = SearchConfig.from_toml(run_dir / "config.toml")
    meta = json.loads((run_dir / "run.json").read_text())
    tasks = {name: get_task(name) for name in config.tasks}
    with open(run_dir / "hall_of_fame.csv", newline="") as fh:
        rows = {int(r["rank"]): r for r in csv.DictReader(fh)}
    for rank in (int(x) for x in args.ranks.split(",")):
        if rank not in rows:
            print(f"rank {rank} is not in {run_dir / 'hall_of_fame.csv'} (ranks 1..{len(rows)})", file=sys.stderr)
            return 2
        r = rows[rank]
        scores = {t: (float(r[t]) if r[t] not in ("", "None") else None) for t in config.tasks}
        entry = Entry(r["expr"], r["canonical"], int(r["complexity"]), float(r["fitness"]), scores,
                      int(r["generation"]), r["origin"])
        name = save_discovered(entry, config=config, meta=meta, tasks=tasks, directory=args.directory)
        print(f"rank {rank}: {r['expr']} -> {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
