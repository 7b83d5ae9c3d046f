"""Throughput of one search with the in-process evaluator and with Ray (1 and 2 workers).

    python experiments/bench_search.py [--quick] [--repeats N] [--population P] [--generations G] [--steps S]
                                       [--tasks digits,breast_cancer]

Runs the same GP search (digits, or the ``--tasks`` given, e.g. the
quickstart's two; fixed seed) with ``evaluator="local"``, a Ray evaluator
limited to 1 worker and one with 2 workers, each run on a fresh local Ray
instance (``ray.init(num_cpus=2)``; its start-up and the workers' warm-up are
printed apart), so that no run screens trees that workers remember from an
earlier one.  For each it prints the wall time, evaluations per second (recorded
(candidate, task, seed, budget) trainings, baselines included) and the ratio
to local, and where the wall time went:

* training: the trainer's own time (``train_time`` summed over evaluations),
* in-job overhead: worker job time minus training (parsing, compiling, data setup),
* waiting on the evaluator: time the driver spent blocked in ``evaluator.map``
  (for Ray: training on the workers, transport and scheduling, idle workers),
* screening: the driver waiting for the screening of proposals (tree ->
  canonical Expr, rejection filters, fingerprints: on the Ray workers, or in
  this process for local), strategy (ask/tell without the screening), filters
  (dedup; verdicts the screening computed are reused), run store (SQLite reads
  and writes), checkpoint and result files, and the rest of the driver.

"Outside training" is 1 - training / (wall x workers): the share of the
worker time available to the run that did not go into training.  The hall of
fame of every mode is checked to be identical.  The machine's cores may be
shared with other work: read the numbers as measured, not as a property of Ray.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

from lossforge.search import SearchConfig, run
from lossforge.search import engine as engine_module
from lossforge.search.evaluators import LocalEvaluator, RayEvaluator, init_local_ray
from lossforge.search.filters import CandidateFilter
from lossforge.search.runstore import RunStore
from lossforge.search.screening import Screener
from lossforge.tasks import get as get_task


class TimedEvaluator:
    """Wraps an evaluator: time blocked waiting for reports vs. time the consumer
    (the scorer recording results) holds control between them, and job times."""

    def __init__(self, inner):
        self.inner = inner
        self.parallelism = inner.parallelism
        self.waiting = 0.0
        self.screening = 0.0      # blocked on screening tasks (search.screening)
        self.job_time = 0.0
        self.jobs = 0

    def map(self, jobs):
        it = iter(self.inner.map(jobs))
        while True:
            t0 = time.perf_counter()
            try:
                report = next(it)
            except StopIteration:
                self.waiting += time.perf_counter() - t0
                return
            self.waiting += time.perf_counter() - t0
            self.job_time += report.wall_time
            self.jobs += 1
            yield report

    def screen(self, spec, batch):
        t0 = time.perf_counter()
        try:
            return self.inner.screen(spec, batch)
        finally:
            self.screening += time.perf_counter() - t0

    def close(self):
        pass  # the benchmark owns the inner evaluator


@contextlib.contextmanager
def timed(targets: dict[str, list[tuple[object, str]]], totals: dict[str, float]):
    """Accumulate the time spent in the named functions (outermost calls only per label)."""
    saved = []
    depth: dict[str, int] = {}

    def wrap(label, fn):
        def inner(*args, **kwargs):
            depth[label] = depth.get(label, 0) + 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[label] -= 1
                if depth[label] == 0:
                    totals[label] = totals.get(label, 0.0) + time.perf_counter() - t0
        return inner

    for label, items in targets.items():
        for owner, name in items:
            fn = getattr(owner, name)
            saved.append((owner, name, fn))
            setattr(owner, name, wrap(label, fn))
    try:
        yield totals
    finally:
        for owner, name, fn in reversed(saved):
            setattr(owner, name, fn)


def instrumented_targets(strategy_cls) -> dict:
    return {
        "strategy": [(strategy_cls, "ask"), (strategy_cls, "tell")],
        "screening": [(Screener, "screen")],
        "filters": [(CandidateFilter, "check")],
        "run store": [(RunStore, n) for n in ("record_evaluations", "cached_evaluations", "record_generation",
                                              "open_run", "set_status", "count_evaluations", "generations")],
        "checkpoint+files": [(engine_module, "write_checkpoint"), (engine_module, "_write_results")],
    }


def measure(config: SearchConfig, inner, run_dir: Path) -> dict:
    from lossforge.search.strategies import GPStrategy

    ev = TimedEvaluator(inner)
    totals: dict[str, float] = {}
    with timed(instrumented_targets(GPStrategy), totals):
        t0 = time.perf_counter()
        result = run(config, run_dir, quiet=True, evaluator=ev)
        wall = time.perf_counter() - t0
    store = RunStore(f"sqlite:///{run_dir / 'runs.db'}")
    try:
        rows = store.evaluations(result.run_id)
    finally:
        store.close()
    train = sum(r["train_time"] or 0.0 for r in rows)
    return {
        "wall": wall, "evaluations": result.evaluations, "train": train, "job": ev.job_time,
        "waiting": ev.waiting, "screening": ev.screening, "jobs": ev.jobs, "parallelism": ev.parallelism,
        "parts": totals,
        "hof": [(e.canonical, e.fitness) for e in result.hall_of_fame],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a ~1 minute run (smaller population, fewer steps)")
    ap.add_argument("--repeats", type=int, default=None, help="runs per mode; the median wall time is reported")
    ap.add_argument("--population", type=int, default=None)
    ap.add_argument("--generations", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--chunk-size", type=int, default=None, help="candidates per job (default: population / 4)")
    ap.add_argument("--tasks", default="digits", help="comma-separated built-in tasks (default: digits)")
    args = ap.parse_args()
    population = args.population or (16 if args.quick else 32)
    config = SearchConfig(
        tasks=[t.strip() for t in args.tasks.split(",") if t.strip()], name="bench", seed=0, population=population,
        generations=args.generations or (3 if args.quick else 5),
        steps=args.steps or (100 if args.quick else 300),
        chunk_size=args.chunk_size or max(1, population // 4), save_best=0, evaluator="local")
    repeats = args.repeats or (1 if args.quick else 3)

    import ray
    import torch

    from lossforge.search import screening

    torch.set_num_threads(1)
    tasks = {t: get_task(t) for t in config.tasks}
    modes = {"local": lambda: LocalEvaluator(tasks, threads=1),
             "ray x1": lambda: RayEvaluator(tasks, workers=1),
             "ray x2": lambda: RayEvaluator(tasks, workers=2)}
    print(f"search: {config.tasks} population={config.population} generations={config.generations} "
          f"steps={config.steps} chunk_size={config.chunk_size} repeats={repeats}")
    # Every run starts as a user's search does: Ray modes on a fresh local instance (new worker
    # processes, imports warmed), the local mode with this process's screening caches emptied.
    # Otherwise a repeat screens its trees again on workers that remember them from an earlier
    # run (6x faster: 0.6 against 3.9 s of screening a run), by chance of which process gets which.
    setup: list[float] = []
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(repeats):
            for name, make in modes.items():
                t0 = time.perf_counter()
                if ray.is_initialized():
                    ray.shutdown()
                screening._WORKER.clear()
                if name != "local":
                    init_local_ray(2)
                inner = make()
                setup.append(time.perf_counter() - t0)
                m = measure(config, inner, Path(tmp) / f"{name.replace(' ', '')}-{rep}")
                results.setdefault(name, []).append(m)
    if ray.is_initialized():
        ray.shutdown()
    print(f"setting up before each run (Ray started, evaluators created and warmed; excluded below): "
          f"{min(setup):.1f}-{max(setup):.1f} s")

    hofs = {name: ms[0]["hof"] for name, ms in results.items()}
    identical = all(h == hofs["local"] for h in hofs.values())
    base = None
    print(f"\n{'mode':8s} {'wall s':>7s} {'evals':>6s} {'evals/s':>8s} {'vs local':>8s} {'outside training':>17s}")
    summary = {}
    for name, ms in results.items():
        m = sorted(ms, key=lambda x: x["wall"])[len(ms) // 2]  # median by wall time
        rate = m["evaluations"] / m["wall"]
        base = base or rate
        outside = 1.0 - m["train"] / (m["wall"] * m["parallelism"])
        summary[name] = m
        walls = ", ".join(f"{x['wall']:.1f}" for x in ms)
        print(f"{name:8s} {m['wall']:7.1f} {m['evaluations']:6d} {rate:8.2f} {rate / base:7.2f}x {outside:16.1%}"
              + (f"   (walls: {walls})" if len(ms) > 1 else ""))
    print(f"\nhall of fame identical across modes: {'yes' if identical else 'NO'}")

    print("\nwhere the wall time went (seconds, share of wall):")
    labels = ["training (trainer)", "in-job overhead", "waiting on evaluator", "screening", "strategy", "filters",
              "run store", "checkpoint+files", "rest of driver"]
    print(f"{'':22s}" + "".join(f"{name:>16s}" for name in summary))
    rows = {}
    for name, m in summary.items():
        p = m["parts"]
        driver_named = sum(p.get(k, 0.0) for k in ("strategy", "filters", "run store", "checkpoint+files"))
        rows[name] = {
            "training (trainer)": m["train"] / m["parallelism"],
            "in-job overhead": (m["job"] - m["train"]) / m["parallelism"],
            "waiting on evaluator": m["waiting"],
            "screening": m["screening"],
            "strategy": p.get("strategy", 0.0) - m["screening"],
            "filters": p.get("filters", 0.0),
            "run store": p.get("run store", 0.0),
            "checkpoint+files": p.get("checkpoint+files", 0.0),
            "rest of driver": m["wall"] - m["waiting"] - driver_named,
        }
    for label in labels:
        cells = "".join(f"{rows[n][label]:8.2f} ({rows[n][label] / summary[n]['wall']:4.0%})" for n in summary)
        print(f"{label:22s}{cells}")
    print("(training and in-job overhead are per worker: summed over jobs / workers; they happen inside "
          "'waiting on evaluator'. screening: the driver waiting for the screening of proposals, on the workers "
          "for Ray, in this process for local; strategy: ask/tell without it.)")
    for name, m in summary.items():
        busy = m["job"] / (m["waiting"] * m["parallelism"]) if m["waiting"] else float("nan")
        print(f"{name}: {m['jobs']} jobs, mean job {m['job'] / max(m['jobs'], 1):.3f} s, workers busy "
              f"{busy:.0%} of the time the driver waited")
    if "ray x1" in summary and "ray x2" in summary:
        x1, x2 = summary["ray x1"], summary["ray x2"]
        speed = (x2["evaluations"] / x2["wall"]) / (x1["evaluations"] / x1["wall"])
        print(f"\nray x2 / ray x1: {speed:.2f}x (target 1.8x; the limit is 2x)")
        overhead = (x1["waiting"] - x1["job"]) / x1["job"] if x1["job"] else float("nan")
        print(f"Ray overhead with 1 worker: the driver waited {overhead:.1%} longer for its jobs than they ran "
              "on the worker (transport, scheduling, result handling; target < 3 %)")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
