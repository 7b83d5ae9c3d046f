"""Evaluators: the one seam where parallelism plugs in.

A :class:`Job` is a chunk of candidates to train on one task with one seed and
budget.  ``evaluator.map(jobs)`` yields a :class:`JobReport` per job as jobs
finish.  Two backends share :func:`run_job`: :class:`LocalEvaluator` (in this
process, for tests and debugging) and :class:`RayEvaluator` (a local Ray
instance by default, a cluster via ``address`` or ``RAY_ADDRESS``).

Neither ever raises for a failing candidate or worker: failures come back as
outcomes with a status and a reason, so every job of a generation is accounted
for.  A candidate's own fault (an exception, NaN, its time limit) is status
``error``.  An infrastructure fault (the worker process or its node died, an
object was lost, a job was cancelled by Ray) is no property of the candidate:
the job is retried with exponential backoff, and when its retries are spent it
comes back with status ``infra`` (:data:`INFRA`), which the scorer never uses as
fitness -- it stops the run with :class:`InfraError` instead, and ``--resume``
re-runs exactly those evaluations.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Protocol, Sequence

from .errors import EvaluationError
from .runstore import INFRA

LOSS_PREFIX = "loss:"


class InfraError(EvaluationError):
    """Evaluations were lost to the infrastructure (workers or nodes died) more
    often than ``max_retries`` allows; the run stops, resumable."""

    exit_status = 3

    def __init__(self, message: str, generation: int | None = None, lost: int = 0):
        super().__init__(message)
        self.generation = generation
        self.lost = lost

    @classmethod
    def from_reports(cls, reports: Sequence["JobReport"], generation: int) -> "InfraError":
        n = sum(len(r.job.entries) for r in reports)
        where = "the baselines" if generation < 0 else f"generation {generation + 1}"
        return cls(f"{n} evaluation(s) of {where} were lost to the infrastructure after "
                   f"{reports[0].attempts - 1} retries ({reports[0].failure.split(': ', 1)[-1]}); "
                   "no candidate was scored from them", generation=generation, lost=n)


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
    status: str            # ok | diverged | error | infra
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

    @property
    def infra(self) -> bool:
        """Lost to the infrastructure, not failed by its candidates."""
        return self.failure is not None and any(o.status == INFRA for o in self.outcomes)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads (None: as it is), then restore.

    Small tensors (a job's population, the filters' probes) are fastest on one
    thread; several threads on a shared or busy core spin against each other
    and run such work several times slower."""
    import torch

    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(previous)


def run_job(task, job: Job, threads: int | None = None, time_limit: float | None = None) -> JobReport:
    """Evaluate one job in this process; never raises."""
    start = time.perf_counter()
    with torch_threads(threads):
        return _run_entries(task, job, time_limit, start)


def _run_entries(task, job: Job, time_limit: float | None, start: float) -> JobReport:
    import math

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


def failed_report(job: Job, reason: str, attempts: int = 1, status: str = "error") -> JobReport:
    return JobReport(job, [Outcome(None, status, reason) for _ in job.entries], failure=reason, attempts=attempts)


def _infra_exceptions():
    """Ray's exceptions that mean the infrastructure failed, not the job's code."""
    from ray import exceptions as rx

    names = ("WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError", "ObjectFetchTimedOutError",
             "ReferenceCountingAssertionError", "ObjectReconstructionFailedError", "LocalRayletDiedError",
             "RaySystemError", "OutOfMemoryError", "TaskCancelledError", "ActorDiedError", "ActorUnavailableError",
             "NodeDiedError", "TaskUnschedulableError", "RuntimeEnvSetupError")
    return tuple({getattr(rx, n) for n in names if isinstance(getattr(rx, n, None), type)})


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

    def screen(self, spec, batch: Sequence[Sequence]) -> list:
        """Screen serialised trees (:mod:`lossforge.search.screening`) in this process."""
        return _screen(spec, batch)

    def close(self) -> None:
        pass


def _put_task(ray, name: str, task):
    """The task into the object store once; a task that cannot be pickled gets one clear error."""
    try:
        return ray.put(task)
    except Exception as exc:
        raise EvaluationError(f"task '{name}' cannot be sent to Ray workers: it does not pickle "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}). Define "
                              "its model as a module-level nn.Module class or factory function (no open files, locks "
                              "or generators in it), or run with --local") from None


def _ray_run_job(task, job: Job, threads, time_limit) -> JobReport:
    return run_job(task, job, threads, time_limit)


def _screen(spec, batch):
    from .screening import screen_tokens

    with torch_threads(1):
        return screen_tokens(spec, batch)


def _ray_warm() -> str:
    import torch  # noqa: F401  (import once per worker, before timing starts)

    import lossforge.losses  # noqa: F401
    import lossforge.search.screening  # noqa: F401  (sympy, DEAP: screening tasks start warm)
    import lossforge.tasks  # noqa: F401

    return _worker_name()


def init_local_ray(num_cpus: int, **kwargs) -> None:
    """Start a local Ray instance for a search (lossforge's evaluator, its benchmarks and tests).

    Ray starts its worker processes 15 nice levels below the driver (its
    ``worker_niceness``), for clusters where workers share a node with Ray's
    own services.  On one machine that is shared with anything else (a laptop,
    a CI runner, another search) it hands the cores to the other work: with
    three nice-19 processes beside it, one job (8 catalogue losses, digits, 300
    steps) took 0.72-1.75 s on a worker against 0.46-0.66 s in the driver's
    process, and bench_search's jobs 0.865 s against 0.605 s on average.  A
    local instance runs its workers at the
    driver's own priority, as the local evaluator's work runs; a cluster joined
    by address keeps its own settings.
    """
    import ray

    options = dict(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    options.update(kwargs)
    ray.init(num_cpus=num_cpus, _system_config={"worker_niceness": 0}, **options)


class RayEvaluator:
    """Runs jobs as Ray tasks.

    ``ray.init()`` starts a local instance (``workers`` CPUs) unless Ray is
    already initialised, ``address`` is given, or ``RAY_ADDRESS`` is set, in
    which case the cluster is joined with no code change.  Each task's data
    goes to the object store once.  A worker that dies is retried by Ray
    (``max_retries``); a job that outlives ``time_limit`` (plus a grace
    period) is cancelled and its candidates recorded as failed.

    Retries of infrastructure faults are this class's, not Ray's (whose are
    immediate): a job lost to a dead worker or node is resubmitted after
    ``BACKOFF * 2**k`` seconds (at most ``MAX_BACKOFF``), up to ``max_retries``
    times, while the other jobs keep running; then it is reported with status
    ``infra``.  ``busy`` is the number of jobs running now, ``busy_seconds``
    the worker-seconds spent running jobs (for utilisation).
    """

    GRACE = 30.0
    BACKOFF = 1.0
    MAX_BACKOFF = 30.0

    def __init__(self, tasks: Mapping[str, object], *, workers: int | None = None, address: str | None = None,
                 cpus_per_eval: float = 1.0, gpus_per_eval: float = 0.0, time_limit: float | None = None,
                 max_retries: int = 3, warm: bool = True, py_modules: Sequence[str] = ()):
        import ray

        self.ray = ray
        self._owns = False
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS") or None
            kwargs = dict(include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                          ignore_reinit_error=True)
            if py_modules:  # the user's task and model modules travel with the job (not installed on workers)
                kwargs["runtime_env"] = {"py_modules": list(py_modules)}
            if address:
                ray.init(address=address, **kwargs)
            else:
                init_local_ray(workers or os.cpu_count() or 1, **kwargs)
            self._owns = True
        self.dashboard_url = _dashboard_url()
        self.cpus_per_eval = cpus_per_eval
        self.threads = max(1, int(cpus_per_eval))
        self.time_limit = time_limit
        self.max_retries = max_retries
        total_cpus = ray.cluster_resources().get("CPU", 1)
        slots = int(total_cpus // cpus_per_eval) or 1
        if gpus_per_eval > 0:
            slots = min(slots, int(ray.cluster_resources().get("GPU", 0) // gpus_per_eval) or 1)
        self.parallelism = max(1, min(slots, workers) if workers else slots)
        try:
            self.task_refs = {name: _put_task(ray, name, task) for name, task in tasks.items()}
        except EvaluationError:
            if self._owns:
                ray.shutdown()
            raise
        if py_modules and not self._owns:
            import warnings

            warnings.warn(f"Ray was initialised before the search, so lossforge cannot ship {', '.join(py_modules)} "
                          "to the workers; they must be importable there (pass runtime_env={'py_modules': [...]} "
                          "to your ray.init)", stacklevel=2)
        self.busy = 0
        self.busy_seconds = 0.0
        self.infra_retries = 0
        self._remote = ray.remote(_ray_run_job).options(
            num_cpus=cpus_per_eval, num_gpus=gpus_per_eval, max_retries=0, retry_exceptions=False)
        self._screen_remote = ray.remote(_screen).options(num_cpus=cpus_per_eval, max_retries=0,
                                                          retry_exceptions=False)
        if warm:
            warm_fn = ray.remote(_ray_warm).options(num_cpus=cpus_per_eval, num_gpus=gpus_per_eval)
            ray.get([warm_fn.remote() for _ in range(self.parallelism)])

    def map(self, jobs: Sequence[Job]) -> Iterator[JobReport]:
        ray = self.ray
        from ray.exceptions import GetTimeoutError, RayError

        infra_errors = _infra_exceptions()
        pending = list(jobs)[::-1]
        retry: list[tuple[float, Job, int]] = []       # (not before, job, attempts so far)
        inflight: dict = {}                           # ref -> (job, started, attempts so far)
        limit = None if self.time_limit is None else self.time_limit * 1.2 + self.GRACE
        last = time.monotonic()
        try:
            while pending or inflight or retry:
                now = time.monotonic()
                while len(inflight) < self.parallelism and (pending or (retry and retry[0][0] <= now)):
                    if retry and retry[0][0] <= now:
                        _, job, attempts = retry.pop(0)
                    else:
                        job, attempts = pending.pop(), 0
                    ref = self._submit(job)
                    inflight[ref] = (job, time.monotonic(), attempts)
                    self.busy = len(inflight)
                wait = 1.0 if not retry or inflight else max(0.01, retry[0][0] - now)
                ready = ray.wait(list(inflight), num_returns=1, timeout=min(wait, 1.0))[0] if inflight else []
                if not inflight:
                    time.sleep(min(wait, 1.0))
                now = time.monotonic()
                self.busy_seconds += len(inflight) * (now - last)
                last = now
                for ref in ready:
                    job, _started, attempts = inflight.pop(ref)
                    self.busy = len(inflight)
                    try:
                        report = self._report(ray.get(ref), job)
                    except infra_errors as exc:
                        if attempts < self.max_retries:
                            self.infra_retries += 1
                            delay = min(self.BACKOFF * 2 ** attempts, self.MAX_BACKOFF)
                            retry.append((time.monotonic() + delay, job, attempts + 1))
                            retry.sort(key=lambda r: r[0])
                            continue
                        yield failed_report(job, f"lost to the infrastructure after {self.max_retries} retries: "
                                                 f"{_reason(exc)}", attempts=attempts + 1, status=INFRA)
                        continue
                    except (RayError, GetTimeoutError) as exc:  # the job's own code failed on the worker
                        yield failed_report(job, f"the job failed on its worker: {_reason(exc)}",
                                            attempts=attempts + 1)
                        continue
                    report.attempts = attempts + 1
                    yield report
                if limit is not None:
                    now = time.monotonic()
                    for ref, (job, started, attempts) in list(inflight.items()):
                        if now - started > limit:
                            ray.cancel(ref, force=True)
                            inflight.pop(ref)
                            self.busy = len(inflight)
                            yield failed_report(job, f"cancelled after exceeding the time limit of "
                                                     f"{self.time_limit:g} s", attempts=attempts + 1)
        finally:
            for ref in inflight:  # an interrupted map leaves nothing running
                ray.cancel(ref, force=True)
            self.busy = 0

    SCREEN_TIMEOUT = 300.0
    MIN_SCREEN_PART = 4

    def screen(self, spec, batch: Sequence[Sequence]) -> list:
        """Screen serialised trees (:mod:`lossforge.search.screening`) on the workers, one
        task per share of the batch, results in order.  Never raises: a share whose task
        fails (a lost worker or node, a timeout) is screened in this process -- the same
        pure function, so the same result."""
        batch = list(batch)
        size = max(self.MIN_SCREEN_PART, -(-len(batch) // self.parallelism))
        parts = [batch[i:i + size] for i in range(0, len(batch), size)]
        refs = [self._screen_remote.remote(spec, part) for part in parts]
        out: list = []
        deadline = time.monotonic() + self.SCREEN_TIMEOUT
        for ref, part in zip(refs, parts):
            try:
                got = self.ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
                if len(got) != len(part):
                    raise ValueError("a screening task returned the wrong number of results")
            except Exception:
                with contextlib.suppress(Exception):
                    self.ray.cancel(ref, force=True)
                got = _screen(spec, part)
            out.extend(got)
        return out

    def _submit(self, job: Job):
        """Start one job on a worker; returns its object ref."""
        return self._remote.remote(self.task_refs[job.task], job, self.threads, self.time_limit)

    def _report(self, value, job: Job) -> JobReport:
        """The worker's return value as a report (a seam for stand-in jobs in benchmarks)."""
        return value

    def close(self) -> None:
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()
        self._owns = False


def _dashboard_url() -> str | None:
    """Where the Ray dashboard of the cluster this driver joined is, if one runs
    (a cluster started with ``ray[default]``: ``lossforge[cluster]``)."""
    try:
        from ray._private.worker import get_dashboard_url

        url = get_dashboard_url()
    except Exception:  # an internal API: never let it stop a search
        return None
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__


def make_evaluator(kind: str, tasks: Mapping[str, object], *, workers=None, address=None, cpus_per_eval=1.0,
                   gpus_per_eval=0.0, time_limit=None, max_retries=3, py_modules: Sequence[str] = ()):
    if kind == "local":
        return LocalEvaluator(tasks, threads=max(1, int(cpus_per_eval)), time_limit=time_limit)
    if kind == "ray":
        return RayEvaluator(tasks, workers=workers, address=address, cpus_per_eval=cpus_per_eval,
                            gpus_per_eval=gpus_per_eval, time_limit=time_limit, max_retries=max_retries,
                            py_modules=py_modules)
    raise ValueError(f"unknown evaluator '{kind}'; use 'ray' or 'local'")
