"""Simulated scale: how many Ray workers one search driver keeps busy.

    python experiments/bench_scale.py [--workers 8,32,64,128] [--job-seconds S] [--generations G] [--chunk-size C]

A cluster of many workers is simulated on one machine: a local Ray instance
with ``W`` logical CPUs (more than the machine has) runs stand-in tasks that
sleep instead of computing, so they need no core:

* training: a job sleeps for the measured duration of one quickstart-sized job
  (``chunk_size`` candidates x 200 steps on digits, one thread), or
  ``--job-seconds``, and returns a metric derived from a hash of each candidate;
* screening (tree -> canonical form, rejection filters, fingerprint: work the
  search runs on the workers, ``search/screening.py``): each screening task
  sleeps for the time the real screening of its trees took and returns their
  real results.  Those come from a first, recording pass of the same search
  (in-process, the same hash metrics, so it draws exactly the same trees),
  which screens every tree for real and times each one.

Everything else is the real search: the GP strategy's drawing and bookkeeping,
the filters' dedup, the scorer, the SQLite run store, checkpoints, and the Ray
evaluator's scheduling, retries and result handling.

The population is ``W x chunk_size``, so every generation has one training job
per worker.  For each ``W`` it prints evaluations per second, worker
utilisation (training: the stand-in jobs' time on the workers / (W x wall
time); screening likewise), the driver's CPU time per evaluation
(``time.process_time`` of the driver process, Ray's driver threads included),
the run store's writes per second, and where the driver's wall time went.  The
machine's cores may be shared with other work: read the figures as measured
under that load (the load average is printed).
"""
from __future__ import annotations

import argparse
import cProfile
import hashlib
import os
import socket
import sys
import tempfile
import time
from dataclasses import astuple
from pathlib import Path

from lossforge.search import SearchConfig, run
from lossforge.search.evaluators import Job, JobReport, LocalEvaluator, Outcome, RayEvaluator, init_local_ray, run_job
from lossforge.search.runstore import RunStore
from lossforge.search.screening import Screened

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import instrumented_targets, timed  # noqa: E402  (one definition of the timing helpers)


def stand_in_job(entries: tuple[str, ...], task: str, seed: int, seconds: float):
    """Runs on a worker: sleep ``seconds`` (the training), then a metric per entry
    from a hash of it (:func:`hash_metrics`: the baseline 0.8, candidates 0.55 .. 0.95)."""
    t0 = time.perf_counter()
    time.sleep(seconds)
    metrics = hash_metrics(entries, task, seed)
    return metrics, time.perf_counter() - t0, f"{socket.gethostname()}:{os.getpid()}"


def stand_in_screen(results: list, seconds: float):
    """Runs on a worker: sleep for the real screening time of these trees, then return
    their real results (recorded in the first pass)."""
    t0 = time.perf_counter()
    time.sleep(seconds)
    return results, time.perf_counter() - t0


def hash_metrics(entries, task: str, seed: int) -> list[float]:
    return [0.8 if e.startswith("loss:") else
            0.55 + 0.4 * int.from_bytes(hashlib.sha256(f"{e}|{task}|{seed}".encode()).digest()[:8], "big") / 2.0 ** 64
            for e in entries]


class Recorder(LocalEvaluator):
    """The recording pass: training gives the stand-in jobs' metrics at once; screening is
    real, one tree at a time, timed."""

    def __init__(self, parallelism: int):
        super().__init__({})
        self.parallelism = parallelism   # as the measured pass's: the same candidates screened ahead
        self.screened: dict[tuple, tuple] = {}    # tokens -> (Screened, seconds)

    def map(self, jobs):
        for job in jobs:
            yield JobReport(job, [Outcome(m, "ok", None, 0.0) for m in hash_metrics(job.entries, job.task, job.seed)],
                            wall_time=0.0, worker="recorder")

    def screen(self, spec, batch):
        out = []
        for tokens in batch:
            t0 = time.perf_counter()
            (result,) = super().screen(spec, [tokens])
            self.screened[tuple(tokens)] = (result, time.perf_counter() - t0)
            out.append(result)
        return out


class StandInEvaluator(RayEvaluator):
    """The real Ray evaluator, submitting :func:`stand_in_job` instead of training and
    :func:`stand_in_screen` instead of screening."""

    def __init__(self, workers: int, seconds: float, screened: dict):
        import ray

        super().__init__({}, workers=workers, warm=False)
        self.seconds = seconds
        self.screened = screened
        self._stand_in = ray.remote(stand_in_job).options(num_cpus=1, max_retries=0)
        self._stand_in_screen = ray.remote(stand_in_screen).options(num_cpus=1, max_retries=0)
        self.job_time = 0.0
        self.jobs = 0
        self.screen_time = 0.0
        self.screen_tasks = 0
        self.misses = 0
        ray.get([self._stand_in.remote(("loss:warm",), "warm", 0, 0.5) for _ in range(workers)])  # W processes

    def _submit(self, job: Job):
        return self._stand_in.remote(job.entries, job.task, job.seed, self.seconds)

    def _report(self, value, job: Job) -> JobReport:
        metrics, wall, worker = value
        self.job_time += wall
        self.jobs += 1
        return JobReport(job, [Outcome(m, "ok", None, wall / len(metrics)) for m in metrics], wall_time=wall,
                         worker=worker)

    def screen(self, spec, batch):
        """As :meth:`RayEvaluator.screen` (one task per share of the batch), with stand-in tasks."""
        batch = [tuple(t) for t in batch]
        for t in batch:
            if t not in self.screened:   # not drawn in the recording pass: screened for real here (counted)
                self.misses += 1
                t0 = time.perf_counter()
                (result,) = LocalEvaluator.screen(self, spec, [list(t)])
                self.screened[t] = (result, time.perf_counter() - t0)
        size = max(self.MIN_SCREEN_PART, -(-len(batch) // self.parallelism))
        parts = [batch[i:i + size] for i in range(0, len(batch), size)]
        # results travel as plain tuples (a real worker returns Screened objects; the stand-in workers are
        # not warmed with lossforge's imports, which would take minutes for 128 processes on 2 cores)
        refs = [self._stand_in_screen.remote([astuple(self.screened[t][0]) for t in part],
                                             sum(self.screened[t][1] for t in part)) for part in parts]
        out = []
        for results, wall in self.ray.get(refs):
            self.screen_time += wall
            self.screen_tasks += 1
            out.extend(Screened(*r) for r in results)
        return out


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


def measure(workers: int, seconds: float, generations: int, chunk_size: int, tmp: Path,
            profile: Path | None = None) -> dict:
    from lossforge.search.strategies import GPStrategy

    population = workers * chunk_size
    config = SearchConfig(tasks=["digits"], name=f"scale{workers}", seed=0, population=population,
                          generations=generations, steps=200, chunk_size=chunk_size, save_best=0, confirm_top=0,
                          evaluator="ray", seed_losses=["cross_entropy"], time_limit=None)
    recorder = Recorder(workers)
    t0 = time.perf_counter()
    recorded = run(config, tmp / f"rec{workers}", quiet=True, progress=False, evaluator=recorder)
    record_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluator = StandInEvaluator(workers, seconds, recorder.screened)
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
        profiler = cProfile.Profile() if profile else None
        with timed(instrumented_targets(GPStrategy), totals):
            cpu0, t0 = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            result = run(config, tmp / f"w{workers}", quiet=True, progress=False, evaluator=evaluator)
            if profiler:
                profiler.disable()
                profiler.dump_stats(str(profile.with_suffix(f".w{workers}.prof")))
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        RunStore.record_evaluations = real_record
        evaluator.close()
    same = [(e.canonical, e.fitness) for e in result.hall_of_fame] == \
        [(e.canonical, e.fitness) for e in recorded.hall_of_fame]
    screen_cpu = sum(sec for _, sec in recorder.screened.values())
    return {"workers": workers, "population": population, "wall": wall, "cpu": cpu, "start_up": start_up,
            "evaluations": result.evaluations, "jobs": evaluator.jobs, "job_time": evaluator.job_time,
            "screen_time": evaluator.screen_time, "screen_tasks": evaluator.screen_tasks, "misses": evaluator.misses,
            "trees": len(recorder.screened), "screen_cpu": screen_cpu, "record_wall": record_wall, "same": same,
            "writes": writes, "parts": totals,
            "gen_walls": [g["wall_time"] for g in result.generations]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="8,32,64,128", help="comma-separated worker counts (logical CPUs)")
    ap.add_argument("--job-seconds", type=float, default=None,
                    help="stand-in job duration (default: measure one quickstart-sized job here)")
    ap.add_argument("--generations", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=16, help="candidates per job (the config default: 16)")
    ap.add_argument("--profile", type=Path, default=None, metavar="FILE",
                    help="profile the driver during the measured (stand-in) search of each W: FILE.wW.prof")
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
            init_local_ray(w)
            ray_start = time.perf_counter() - t0
            try:
                m = measure(w, seconds, args.generations, args.chunk_size, Path(tmp), args.profile)
            finally:
                ray.shutdown()
            m["ray_start"] = ray_start
            rows.append(m)
            print(f"  W={w}: ray.init {ray_start:.1f} s, {w} workers started in {m['start_up']:.1f} s, "
                  f"search {m['wall']:.1f} s (generations: {', '.join(f'{g:.1f}' for g in m['gen_walls'])} s)",
                  flush=True)

    print(f"\n{'workers':>7s} {'population':>10s} {'evals':>6s} {'evals/s':>8s} {'busy':>6s} {'screening':>9s} "
          f"{'driver CPU/eval':>16s} {'store rows/s':>13s} {'store txn/s':>12s} {'ideal evals/s':>14s}")
    for m in rows:
        busy = m["job_time"] / (m["workers"] * m["wall"])
        screening = m["screen_time"] / (m["workers"] * m["wall"])
        ideal = m["population"] / seconds  # every worker busy all the time: W x chunk_size per job time
        print(f"{m['workers']:7d} {m['population']:10d} {m['evaluations']:6d} {m['evaluations'] / m['wall']:8.1f} "
              f"{busy:6.0%} {screening:9.0%} {1000 * m['cpu'] / m['evaluations']:13.2f} ms "
              f"{m['writes']['rows'] / m['wall']:13.1f} {m['writes']['calls'] / m['wall']:12.1f} {ideal:14.1f}")
    print("\nwhere the driver's wall time went (seconds, share of the search's wall time):")
    labels = ("strategy", "screening", "filters", "run store", "checkpoint+files")
    print(f"{'workers':>7s} " + "".join(f"{label:>20s}" for label in labels) + f"{'waiting + rest':>20s}")
    for m in rows:
        parts = dict(m["parts"])
        parts["strategy"] = parts.get("strategy", 0.0) - parts.get("screening", 0.0)  # its own work
        named = sum(parts.get(k, 0.0) for k in labels)
        cells = "".join(f"{parts.get(k, 0.0):10.2f} ({parts.get(k, 0.0) / m['wall']:5.1%}) " for k in labels)
        print(f"{m['workers']:7d} {cells}{m['wall'] - named:10.2f} ({(m['wall'] - named) / m['wall']:5.1%})")
    print("(busy: stand-in training time on the workers / (workers x wall); screening: stand-in screening time "
          "likewise; 'strategy': ask/tell without the screening; 'screening': the driver waiting for screening "
          "tasks; 'waiting + rest': the driver blocked on training jobs plus the rest.)")
    print("\nscreening recorded in the first pass (in-process, real):")
    for m in rows:
        print(f"  W={m['workers']}: {m['trees']} distinct trees screened, {1000 * m['screen_cpu'] / m['trees']:.1f} ms "
              f"each ({m['screen_cpu']:.1f} s in all; recording pass {m['record_wall']:.1f} s); "
              f"{m['screen_tasks']} screening tasks; trees not recorded: {m['misses']}; hall of fame identical to "
              f"the in-process pass: {'yes' if m['same'] else 'NO'}")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
