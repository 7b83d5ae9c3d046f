"""Simulated scale: how many Ray workers one search driver keeps busy.

    python experiments/bench_scale.py [--workers 8,32,128] [--job-seconds S] [--generations G] [--chunk-size C]

A cluster of many workers is simulated on one machine: a local Ray instance
with ``W`` logical CPUs (more than the machine has) runs a stand-in job that
sleeps for a fixed time -- the measured duration of one quickstart-sized job
(``chunk_size`` candidates x 200 steps on digits, one thread), or
``--job-seconds`` -- and returns a metric derived from a hash of the
candidate, so it needs no core.  Everything else is the real search: the GP
strategy with its screening, the filters (dedup, fingerprints, rejection
checks, direct check), the scorer, the SQLite run store, checkpoints, and the
Ray evaluator's scheduling, retries and result handling; only the training
inside the job is replaced.

The population is ``W x chunk_size``, so every generation has one job per
worker.  For each ``W`` it prints evaluations per second, worker utilisation
(the stand-in jobs' time on the workers / (W x wall time)), the driver's CPU
time per evaluation (``time.process_time`` of the driver process, Ray's
driver threads included), the run store's writes per second, and where the
driver's wall time went (strategy ask/tell with screening, scoring filters,
waiting on the workers).  The machine's cores may be shared with other work:
read the figures as measured under that load.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from lossforge.search import SearchConfig, run
from lossforge.search.evaluators import Job, JobReport, Outcome, RayEvaluator, run_job
from lossforge.search.runstore import RunStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import instrumented_targets, timed  # noqa: E402  (one definition of the timing helpers)


def stand_in_job(entries: tuple[str, ...], task: str, seed: int, seconds: float):
    """Runs on a worker: sleep ``seconds`` (the training), then a metric per entry
    from a hash of it (the baseline gets 0.8, candidates 0.55 .. 0.95)."""
    t0 = time.perf_counter()
    time.sleep(seconds)
    metrics = []
    for entry in entries:
        h = int.from_bytes(hashlib.sha256(f"{entry}|{task}|{seed}".encode()).digest()[:8], "big") / 2.0 ** 64
        metrics.append(0.8 if entry.startswith("loss:") else 0.55 + 0.4 * h)
    return metrics, time.perf_counter() - t0, f"{socket.gethostname()}:{os.getpid()}"


class StandInEvaluator(RayEvaluator):
    """The real Ray evaluator, submitting :func:`stand_in_job` instead of training."""

    def __init__(self, workers: int, seconds: float):
        import ray

        super().__init__({}, workers=workers, warm=False)
        self.seconds = seconds
        self._stand_in = ray.remote(stand_in_job).options(num_cpus=1, max_retries=0)
        self.job_time = 0.0
        self.jobs = 0
        ray.get([self._stand_in.remote(("loss:warm",), "warm", 0, 0.5) for _ in range(workers)])  # W processes

    def _submit(self, job: Job):
        return self._stand_in.remote(job.entries, job.task, job.seed, self.seconds)

    def _report(self, value, job: Job) -> JobReport:
        metrics, wall, worker = value
        self.job_time += wall
        self.jobs += 1
        return JobReport(job, [Outcome(m, "ok", None, wall / len(metrics)) for m in metrics], wall_time=wall,
                         worker=worker)


def quickstart_job_seconds(chunk_size: int) -> float:
    """Wall time of one real quickstart-sized job in this process (one thread)."""
    import torch

    from lossforge.losses import get as get_loss
    from lossforge.tasks import get as get_task

    torch.set_num_threads(1)
    names = ["cross_entropy", "focal", "poly1", "sce", "taylor_glo", "baikal", "mse", "mae"]
    entries = tuple(str(get_loss(names[i % len(names)]).expr) + ("" if i < len(names) else f" + {i}*0*p")
                    for i in range(chunk_size))
    task = get_task("digits")
    run_job(task, Job("digits", 0, 20, "val", entries[:2]))  # warm-up: data, compilation caches
    t0 = time.perf_counter()
    report = run_job(task, Job("digits", 0, 200, "val", entries))
    elapsed = time.perf_counter() - t0
    if not all(o.status == "ok" for o in report.outcomes):
        print("  (some stand-in reference candidates failed to train; the timing still counts them)")
    return elapsed


def measure(workers: int, seconds: float, generations: int, chunk_size: int, tmp: Path) -> dict:
    from lossforge.search.strategies import GPStrategy

    population = workers * chunk_size
    config = SearchConfig(tasks=["digits"], name=f"scale{workers}", seed=0, population=population,
                          generations=generations, steps=200, chunk_size=chunk_size, save_best=0, confirm_top=0,
                          evaluator="ray", seed_losses=["cross_entropy"], time_limit=None)
    t0 = time.perf_counter()
    evaluator = StandInEvaluator(workers, seconds)
    start_up = time.perf_counter() - t0
    writes = {"calls": 0, "rows": 0}
    real_record = RunStore.record_evaluations

    def counting(self, rows):
        writes["calls"] += 1
        writes["rows"] += len(rows)
        return real_record(self, rows)

    RunStore.record_evaluations = counting
    totals: dict[str, float] = {}
    try:
        with timed(instrumented_targets(GPStrategy), totals):
            cpu0, t0 = time.process_time(), time.perf_counter()
            result = run(config, tmp / f"w{workers}", quiet=True, progress=False, evaluator=evaluator)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        RunStore.record_evaluations = real_record
        evaluator.close()
    return {"workers": workers, "population": population, "wall": wall, "cpu": cpu, "start_up": start_up,
            "evaluations": result.evaluations, "jobs": evaluator.jobs, "job_time": evaluator.job_time,
            "writes": writes, "parts": totals,
            "gen_walls": [g["wall_time"] for g in result.generations]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="8,32,128", help="comma-separated worker counts (logical CPUs)")
    ap.add_argument("--job-seconds", type=float, default=None,
                    help="stand-in job duration (default: measure one quickstart-sized job here)")
    ap.add_argument("--generations", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=16, help="candidates per job (the config default: 16)")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    import ray

    seconds = args.job_seconds
    if seconds is None:
        seconds = quickstart_job_seconds(args.chunk_size)
        print(f"one quickstart-sized job ({args.chunk_size} candidates x 200 steps on digits, 1 thread) took "
              f"{seconds:.2f} s here: the stand-in job sleeps that long")
    else:
        print(f"stand-in job: {seconds:.2f} s (given)")
    print(f"generations={args.generations} chunk_size={args.chunk_size}; population = workers x chunk_size; "
          f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in counts:
            t0 = time.perf_counter()
            ray.init(num_cpus=w, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            ray_start = time.perf_counter() - t0
            try:
                m = measure(w, seconds, args.generations, args.chunk_size, Path(tmp))
            finally:
                ray.shutdown()
            m["ray_start"] = ray_start
            rows.append(m)
            print(f"  W={w}: ray.init {ray_start:.1f} s, {w} workers started in {m['start_up']:.1f} s, "
                  f"search {m['wall']:.1f} s (generations: {', '.join(f'{g:.1f}' for g in m['gen_walls'])} s)",
                  flush=True)

    print(f"\n{'workers':>7s} {'population':>10s} {'evals':>6s} {'evals/s':>8s} {'busy':>6s} "
          f"{'driver CPU/eval':>16s} {'store rows/s':>13s} {'store txn/s':>12s} {'ideal evals/s':>14s}")
    for m in rows:
        busy = m["job_time"] / (m["workers"] * m["wall"])
        ideal = m["population"] / seconds  # every worker busy all the time: W x chunk_size per job time
        print(f"{m['workers']:7d} {m['population']:10d} {m['evaluations']:6d} {m['evaluations'] / m['wall']:8.1f} "
              f"{busy:6.0%} {1000 * m['cpu'] / m['evaluations']:13.2f} ms {m['writes']['rows'] / m['wall']:13.1f} "
              f"{m['writes']['calls'] / m['wall']:12.1f} {ideal:14.1f}")
    print("\nwhere the driver's wall time went (seconds, share of the search's wall time):")
    labels = ("strategy", "filters", "run store", "checkpoint+files")
    print(f"{'workers':>7s} " + "".join(f"{label:>20s}" for label in labels) + f"{'waiting + rest':>20s}")
    for m in rows:
        named = sum(m["parts"].get(k, 0.0) for k in labels)
        cells = "".join(f"{m['parts'].get(k, 0.0):10.2f} ({m['parts'].get(k, 0.0) / m['wall']:5.1%}) " for k in labels)
        print(f"{m['workers']:7d} {cells}{m['wall'] - named:10.2f} ({(m['wall'] - named) / m['wall']:5.1%})")
    print("(busy: stand-in job time on the workers / (workers x wall); 'strategy' includes the screening of "
          "proposals by the filters; 'waiting + rest' is the driver blocked on the workers plus the rest.)")


if __name__ == "__main__":
    main()
