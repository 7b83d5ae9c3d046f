"""Evaluators: the one seam where parallelism plugs in.

A :class:`Job` is a chunk of candidates to train on one task with one seed and
budget.  ``evaluator.map(jobs)`` yields a :class:`JobReport` per job as jobs
finish.  Two backends share :func:`run_job`: :class:`LocalEvaluator` (in this
process, for tests and debugging) and :class:`RayEvaluator` (a local Ray
instance by default, a cluster via ``address`` or ``RAY_ADDRESS``).

Neither ever raises for a failing candidate or worker: failures come back as
outcomes with status ``error`` and a reason, so a generation always completes.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Protocol, Sequence

LOSS_PREFIX = "loss:"


@dataclass(frozen=True)
class Job:
    """Train ``entries`` (expression texts, or ``loss:<name>`` for catalogue
    losses) on ``task`` with this seed, budget and validation split."""

    task: str
    seed: int
    steps: int
    split: str
    entries: tuple[str, ...]
    index: int = 0


@dataclass
class Outcome:
    metric: float | None
    status: str            # ok | diverged | error
    error: str | None = None
    train_time: float = 0.0


@dataclass
class JobReport:
    job: Job
    outcomes: list[Outcome]
    wall_time: float = 0.0          # spent in the worker
    worker: str = ""
    attempts: int = 1
    failure: str | None = None      # set when the whole job failed (worker death, time limit)
    extra: dict = field(default_factory=dict)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_job(task, job: Job, threads: int | None = None, time_limit: float | None = None) -> JobReport:
    """Evaluate one job in this process; never raises."""
    import math

    import torch

    start = time.perf_counter()
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    try:
        from lossforge.losses import get as get_loss
        from lossforge.primitives import parse

        outcomes: list[Outcome | None] = [None] * len(job.entries)
        losses, slots = [], []
        for i, entry in enumerate(job.entries):
            try:
                losses.append(get_loss(entry[len(LOSS_PREFIX):]) if entry.startswith(LOSS_PREFIX) else parse(entry))
                slots.append(i)
            except Exception as exc:  # a bad entry fails alone
                outcomes[i] = Outcome(None, "error", f"{type(exc).__name__}: {exc}")
        if losses:
            try:
                results = task.evaluate(losses, seed=job.seed, steps=job.steps, split=job.split, time_limit=time_limit)
                for i, r in zip(slots, results):
                    metric = float(r.metric) if r.metric is not None and math.isfinite(r.metric) else None
                    status, error = r.status, r.error
                    if status == "ok" and metric is None:  # a task that reports "ok" without a usable number
                        status, error = "diverged", f"the task returned a non-finite metric ({r.metric})"
                    outcomes[i] = Outcome(metric if status == "ok" else None, status, error,
                                          float(getattr(r, "train_time", 0.0) or 0.0))
            except Exception as exc:  # the task itself failed: every candidate of the job is recorded as failed
                for i in slots:
                    outcomes[i] = Outcome(None, "error", f"evaluation failed: {type(exc).__name__}: {exc}")
        return JobReport(job, [o or Outcome(None, "error", "not evaluated") for o in outcomes],
                         wall_time=time.perf_counter() - start, worker=_worker_name())
    finally:
        torch.set_num_threads(previous)


def failed_report(job: Job, reason: str, attempts: int = 1) -> JobReport:
    return JobReport(job, [Outcome(None, "error", reason) for _ in job.entries], failure=reason, attempts=attempts)


class Evaluator(Protocol):
    parallelism: int

    def map(self, jobs: Sequence[Job]) -> Iterator[JobReport]: ...

    def close(self) -> None: ...


class LocalEvaluator:
    """Runs jobs one after another in this process."""

    def __init__(self, tasks: Mapping[str, object], threads: int | None = 1, time_limit: float | None = None):
        self.tasks = dict(tasks)
        self.threads = threads
        self.time_limit = time_limit
        self.parallelism = 1

    def map(self, jobs: Sequence[Job]) -> Iterator[JobReport]:
        for job in jobs:
            yield run_job(self.tasks[job.task], job, self.threads, self.time_limit)

    def close(self) -> None:
        pass


def _ray_run_job(task, job: Job, threads, time_limit) -> JobReport:
    return run_job(task, job, threads, time_limit)


def _ray_warm() -> str:
    import torch  # noqa: F401  (import once per worker, before timing starts)

    import lossforge.losses  # noqa: F401
    import lossforge.tasks  # noqa: F401

    return _worker_name()


class RayEvaluator:
    """Runs jobs as Ray tasks.

    ``ray.init()`` starts a local instance (``workers`` CPUs) unless Ray is
    already initialised, ``address`` is given, or ``RAY_ADDRESS`` is set, in
    which case the cluster is joined with no code change.  Each task's data
    goes to the object store once.  A worker that dies is retried by Ray
    (``max_retries``); a job that outlives ``time_limit`` (plus a grace
    period) is cancelled and its candidates recorded as failed.
    """

    GRACE = 30.0

    def __init__(self, tasks: Mapping[str, object], *, workers: int | None = None, address: str | None = None,
                 cpus_per_eval: float = 1.0, gpus_per_eval: float = 0.0, time_limit: float | None = None,
                 max_retries: int = 3, warm: bool = True):
        import ray

        self.ray = ray
        self._owns = False
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS") or None
            kwargs = dict(include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                          ignore_reinit_error=True)
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=workers or os.cpu_count() or 1, **kwargs)
            self._owns = True
        self.cpus_per_eval = cpus_per_eval
        self.threads = max(1, int(cpus_per_eval))
        self.time_limit = time_limit
        self.max_retries = max_retries
        total_cpus = ray.cluster_resources().get("CPU", 1)
        slots = int(total_cpus // cpus_per_eval) or 1
        if gpus_per_eval > 0:
            slots = min(slots, int(ray.cluster_resources().get("GPU", 0) // gpus_per_eval) or 1)
        self.parallelism = max(1, min(slots, workers) if workers else slots)
        self.task_refs = {name: ray.put(task) for name, task in tasks.items()}
        self._remote = ray.remote(_ray_run_job).options(
            num_cpus=cpus_per_eval, num_gpus=gpus_per_eval, max_retries=max_retries, retry_exceptions=False)
        if warm:
            warm_fn = ray.remote(_ray_warm).options(num_cpus=cpus_per_eval, num_gpus=gpus_per_eval)
            ray.get([warm_fn.remote() for _ in range(self.parallelism)])

    def map(self, jobs: Sequence[Job]) -> Iterator[JobReport]:
        ray = self.ray
        from ray.exceptions import GetTimeoutError, RayError, TaskCancelledError

        pending = list(jobs)[::-1]
        inflight: dict = {}
        limit = None if self.time_limit is None else self.time_limit * 1.2 + self.GRACE
        while pending or inflight:
            while pending and len(inflight) < self.parallelism:
                job = pending.pop()
                ref = self._remote.remote(self.task_refs[job.task], job, self.threads, self.time_limit)
                inflight[ref] = (job, time.monotonic())
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                job, _started = inflight.pop(ref)
                try:
                    yield ray.get(ref)
                except TaskCancelledError:
                    yield failed_report(job, f"cancelled after exceeding the time limit of {self.time_limit:g} s")
                except (RayError, GetTimeoutError) as exc:
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    yield failed_report(job, f"worker failed after {self.max_retries} retries: {type(exc).__name__}: "
                                             f"{reason[:300]}", attempts=self.max_retries + 1)
            if limit is not None:
                now = time.monotonic()
                for ref, (job, started) in list(inflight.items()):
                    if now - started > limit:
                        ray.cancel(ref, force=True)
                        inflight.pop(ref)
                        yield failed_report(job, f"cancelled after exceeding the time limit of {self.time_limit:g} s")

    def close(self) -> None:
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()
        self._owns = False


def make_evaluator(kind: str, tasks: Mapping[str, object], *, workers=None, address=None, cpus_per_eval=1.0,
                   gpus_per_eval=0.0, time_limit=None, max_retries=3):
    if kind == "local":
        return LocalEvaluator(tasks, threads=max(1, int(cpus_per_eval)), time_limit=time_limit)
    if kind == "ray":
        return RayEvaluator(tasks, workers=workers, address=address, cpus_per_eval=cpus_per_eval,
                            gpus_per_eval=gpus_per_eval, time_limit=time_limit, max_retries=max_retries)
    raise ValueError(f"unknown evaluator '{kind}'; use 'ray' or 'local'")
