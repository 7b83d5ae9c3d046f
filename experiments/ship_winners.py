"""Save chosen hall-of-fame entries of a finished run to a loss store, with provenance.

A search saves its own best entry (``save_best``) when it beats the baseline on
the aggregate; this script saves others by hand, e.g. the entries of a run with
``aggregate = "min"`` that tie the baseline on one task and beat it elsewhere:

    python experiments/ship_winners.py experiments/runs/discovery_min --ranks 3,4 --directory losses/discovered

Each entry is read from the run's checkpoint (ranks as printed in
``hall_of_fame.csv``), with the config, seeds and run id from the run directory, and saved
with :func:`lossforge.losses.store.save_discovered` (stable name from the
canonical form; saving the same loss twice writes nothing).
"""
from __future__ import annotations

import argparse
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
    from lossforge.search import SearchConfig
    from lossforge.search.checkpoint import read_checkpoint
    from lossforge.search.halloffame import HallOfFame
    from lossforge.tasks import get as get_task

    run_dir = Path(args.run_dir)
    config = SearchConfig.from_toml(run_dir / "config.toml")
    meta = json.loads((run_dir / "run.json").read_text())
    tasks = {name: get_task(name) for name in config.tasks}
    hof = HallOfFame(config.hall_of_fame)
    hof.load_state(read_checkpoint(run_dir / "checkpoint.json")["hall_of_fame"])
    for rank in (int(x) for x in args.ranks.split(",")):
        if not 1 <= rank <= len(hof.entries):
            print(f"rank {rank} is not in the hall of fame of {run_dir} (ranks 1..{len(hof.entries)})", file=sys.stderr)
            return 2
        entry = hof.entries[rank - 1]
        name = save_discovered(entry, config=config, meta=meta, tasks=tasks, directory=args.directory)
        print(f"rank {rank}: {entry.expr} -> {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
