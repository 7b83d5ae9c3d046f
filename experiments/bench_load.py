"""Load test: a search of 10,000+ evaluations through the real engine on a local Ray instance.

    python experiments/bench_load.py [--quick] [--workers 2] [--run-dir DIR]

``run(config)`` with ``evaluator = "ray"`` (a local Ray instance of
``--workers`` CPUs), random search on two small tasks (``wine``,
``breast_cancer``) with a tiny budget per candidate (``--steps``, default 5)
and two evaluation seeds, so the work is dominated by the engine itself:
proposing, filtering and deduplicating candidates, shipping jobs to the
workers, and recording every result in the run store.

An evaluation is one (candidate, task, seed) training, as recorded in the run
store (``RunStore.count_evaluations``); candidates removed by the filters or
deduplicated are not evaluations.  The generation count is raised until the
target (``--evaluations``, 10,000; ``--quick``: 1,000) is reached or
``--max-generations`` runs out.

Prints throughput (evaluations per second over the whole run and per
generation), the driver's resident memory (sampled every 0.2 s: the peak in
each generation, and at 10 %, 50 % and 100 % of the generations) next to the
size of the run store, and the store's size at the end.  Driver memory that
grew with the generations beyond a few caches (filter verdicts, fingerprints,
hall of fame, about a kilobyte per distinct candidate) would be a leak.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

from lossforge.search import SearchConfig, run
from lossforge.search.runstore import RunStore, store_size_bytes

MiB = 1 << 20


def current_rss() -> int:
    """Resident set size of this process (bytes), from /proc; peak RSS where /proc is missing."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Sampler(threading.Thread):
    """Samples (time, driver RSS, store size) every ``interval`` seconds."""

    def __init__(self, store_url: str, interval: float = 0.2):
        super().__init__(daemon=True)
        self.store_url = store_url
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.time(), current_rss(), store_size_bytes(self.store_url)))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.samples.append((time.time(), current_rss(), store_size_bytes(self.store_url)))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="about 1,000 evaluations instead of 10,000")
    ap.add_argument("--evaluations", type=int, default=None, help="target number of evaluations")
    ap.add_argument("--population", type=int, default=None)
    ap.add_argument("--generations", type=int, default=None, help="default: from the target")
    ap.add_argument("--steps", type=int, default=5, help="training steps per evaluation")
    ap.add_argument("--seeds", type=int, default=2, help="evaluation seeds per candidate and task")
    ap.add_argument("--tasks", default="wine,breast_cancer")
    ap.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray instance")
    ap.add_argument("--chunk-size", type=int, default=64)
    ap.add_argument("--run-dir", default=None, help="default: a new temporary directory")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    target = args.evaluations or (1_000 if args.quick else 10_000)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    population = args.population or (64 if args.quick else 160)
    # Most proposals of a random search are new and pass the filters (the strategy
    # screens out the ones they would reject); each is evaluated once per task
    # and seed.  Aim about 10 % high.
    per_generation = max(1.0, 0.8 * population * len(tasks) * args.seeds)
    generations = args.generations or max(4, int(1.1 * target / per_generation) + 1)
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="lossforge-load-")) / "run"

    config = SearchConfig(
        name="load", tasks=tasks, strategy="random", seed=0, generations=generations, population=population,
        steps=args.steps, eval_seeds=args.seeds, evaluator="ray", workers=args.workers,
        chunk_size=args.chunk_size, direct_check=False, save_best=0, hall_of_fame=20, time_limit=120.0,
    )
    print(f"load test: {config.strategy} search, {generations} generations x {population} candidates, "
          f"tasks {', '.join(tasks)}, {args.steps} steps, {args.seeds} seeds, Ray with {args.workers} CPUs; "
          f"target {target} evaluations; run directory {run_dir}", flush=True)

    sampler = Sampler(f"sqlite:///{(run_dir / 'runs.db').resolve()}")
    rss_start = current_rss()
    sampler.start()
    t0 = time.perf_counter()
    result = run(config, run_dir, quiet=True)
    wall = time.perf_counter() - t0
    sampler.stop()

    store = RunStore(f"sqlite:///{(run_dir / 'runs.db').resolve()}")
    try:
        evaluations = store.count_evaluations(result.run_id)
        per_gen_evals: dict[int, int] = {}
        for row in store.evaluations(result.run_id):
            per_gen_evals[row["generation"]] = per_gen_evals.get(row["generation"], 0) + 1
        gens = store.generations(result.run_id)
    finally:
        store.close()
    store_bytes = store_size_bytes(f"sqlite:///{(run_dir / 'runs.db').resolve()}")

    # Peak RSS and store size during each generation, from the samples between its end and the previous one's.
    rows = []
    prev_end = t0 - 1e9
    samples = sampler.samples
    for g in gens:
        end = g["created"]
        inside = [s for s in samples if prev_end < s[0] <= end] or [min(samples, key=lambda s: abs(s[0] - end))]
        rows.append({"generation": g["generation"], "evaluations": per_gen_evals.get(g["generation"], 0),
                     "wall_s": g["wall_time"], "peak_rss_mib": max(s[1] for s in inside) / MiB,
                     "store_mib": inside[-1][2] / MiB})
        prev_end = end

    print(f"\n{'gen':>4} {'evals':>6} {'wall s':>7} {'evals/s':>8} {'peak RSS MiB':>13} {'store+WAL MiB':>14}")
    for r in rows:
        rate = r["evaluations"] / r["wall_s"] if r["wall_s"] > 0 else float("nan")
        print(f"{r['generation']:>4} {r['evaluations']:>6} {r['wall_s']:>7.2f} {rate:>8.1f} "
              f"{r['peak_rss_mib']:>13.1f} {r['store_mib']:>14.2f}")

    def at(fraction: float) -> dict:
        return rows[max(0, min(len(rows) - 1, round(fraction * len(rows)) - 1))]

    marks = {f"{int(f * 100)}%": at(f) for f in (0.1, 0.5, 1.0)}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    distinct = sum(g["filters"].get("evaluated", 0) for g in gens)
    growth = marks["100%"]["peak_rss_mib"] - marks["10%"]["peak_rss_mib"]
    print(f"\nevaluations recorded: {evaluations} ({'reached' if evaluations >= target else 'BELOW'} the target "
          f"{target}) in {wall:.1f} s: {evaluations / wall:.1f} evaluations/s overall "
          f"({len(gens)} generations, {result.evaluations} per the result)")
    gen_evals, gen_wall = sum(r["evaluations"] for r in rows), sum(r["wall_s"] for r in rows)
    print(f"inside the generations (no Ray start-up, no baselines): {gen_evals} evaluations in {gen_wall:.1f} s: "
          f"{gen_evals / max(gen_wall, 1e-9):.1f} evaluations/s")
    print(f"driver RSS: {rss_start / MiB:.0f} MiB before the run; peak per generation at "
          + ", ".join(f"{k} {v['peak_rss_mib']:.0f} MiB (gen {v['generation']})" for k, v in marks.items())
          + f"; process peak {peak / MiB:.0f} MiB")
    print(f"driver RSS growth from 10% to 100% of the generations: {growth:+.1f} MiB "
          f"for {distinct} candidates trained ({growth * MiB / max(distinct, 1) / 1024:+.2f} KiB each); "
          f"the store (with its WAL) grew {marks['100%']['store_mib'] - marks['10%']['store_mib']:+.2f} MiB on disk")
    print(f"run store at the end: {store_bytes / MiB:.2f} MiB ({store_bytes / max(evaluations, 1):.0f} bytes "
          f"per evaluation, all tables) -> {run_dir / 'runs.db'}")

    figures = {"evaluations": evaluations, "target": target, "wall_s": wall,
               "evaluations_per_s": evaluations / wall, "generations": rows, "rss_marks_mib":
               {k: v["peak_rss_mib"] for k, v in marks.items()}, "rss_start_mib": rss_start / MiB,
               "peak_rss_mib": peak / MiB, "store_mib": store_bytes / MiB, "config": config.to_dict()}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
