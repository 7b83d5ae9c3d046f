"""Turn a generation's proposals into fitness values.

filters -> run-store cache -> short budget for every new candidate ->
promote the best fraction -> full budget -> per-task metrics -> fitness.

Jobs are chunks of at most ``chunk_size`` candidates per (task, seed,
budget), as few as that allows and of equal sizes (within one), formed in
proposal order from the candidates this generation is the first to
evaluate, so the chunks -- and hence the results -- do not depend on
the number of workers or on whether the generation was interrupted and
resumed.  Every job's results are written to the store as soon as they
arrive; a chunk whose results are all recorded is never run again.  The
jobs of every task of a stage (and of all the baselines) go to the
evaluator as one batch, so workers do not wait at a barrier per task.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from lossforge.primitives import Expr

from .evaluators import LOSS_PREFIX, InfraError, Job
from .filters import CandidateFilter, Verdict, count_reasons
from .fitness import REJECTED_FITNESS, aggregate, task_score


@dataclass
class Scored:
    expr: Expr | None
    origin: str
    status: str                        # ok | <filter reason> | failed
    fitness: float = REJECTED_FITNESS
    fidelity: int = 0                  # 0: not trained, 1: short budget, 2: full budget
    metrics: dict[str, float | None] = field(default_factory=dict)
    detail: str = ""
    cases: dict[str, float] = field(default_factory=dict)  # "task@seed" -> score on that case (lexicase)

    @property
    def complexity(self) -> int:
        return self.expr.complexity if self.expr is not None else 10**6

    def candidate_row(self, position: int, origin: str | None = None) -> dict:
        """This candidate as a row of the run store's candidates table (``origin`` overrides its own)."""
        e = self.expr
        return {"position": position, "origin": origin or self.origin, "expr": str(e) if e is not None else None,
                "canonical": e.canonical if e is not None else None,
                "complexity": e.complexity if e is not None else None, "status": self.status,
                "fidelity": self.fidelity, "fitness": self.fitness, "scores": json.dumps(self.metrics)}


class Scorer:
    def __init__(self, *, config, tasks: dict, evaluator, store, run_id: str, seeds: Sequence[int],
                 candidate_filter: CandidateFilter, on_progress: Callable[[int], None] | None = None):
        self.config = config
        self.tasks = tasks
        self.evaluator = evaluator
        self.store = store
        self.run_id = run_id
        self.seeds = list(seeds)
        self.filter = candidate_filter
        self.on_progress = on_progress or (lambda n: None)
        self.full_steps = {name: int(config.steps or t.steps) for name, t in tasks.items()}
        self.short_steps = None
        if config.short_steps is not None:
            self.short_steps = {}
            for name, full in self.full_steps.items():
                if config.short_steps >= full:
                    from .errors import ConfigError

                    raise ConfigError(f"short_steps = {config.short_steps} is not below the full budget of task "
                                      f"'{name}' ({full} steps); lower short_steps or raise steps")
                self.short_steps[name] = config.short_steps
        self.baselines: dict[tuple[str, int], float] = {}
        self.evaluations_run = 0
        self.ray_wall = 0.0
        self.worker_wall = 0.0

    # ------------------------------------------------------------ baselines
    def compute_baselines(self) -> dict:
        """The baseline loss of each task, at each budget, over the run's seeds (one batch of jobs)."""
        levels = [self.full_steps] + ([self.short_steps] if self.short_steps else [])
        requests = [([(LOSS_PREFIX + task.baseline,) * 2], task_name, steps_by_task[task_name])
                    for steps_by_task in levels for task_name, task in self.tasks.items()]
        rows = self._evaluate(requests, generation=-1)
        for (items, task_name, steps) in requests:
            entry = items[0][0]
            metrics = [rows[(entry, task_name, s, steps)] for s in self.seeds]
            bad = [m for m in metrics if m["metric"] is None]
            if bad:
                from .errors import EvaluationError

                raise EvaluationError(f"the baseline loss '{self.tasks[task_name].baseline}' failed on task "
                                      f"'{task_name}' ({bad[0]['error']}); fitness cannot be normalised")
            self.baselines[(task_name, steps)] = sum(m["metric"] for m in metrics) / len(metrics)
        return {f"{t}@{s}": v for (t, s), v in self.baselines.items()}

    # ------------------------------------------------------------ evaluation
    def _evaluate(self, requests: Sequence[tuple[Sequence[tuple[str, str]], str, int]], generation: int) -> dict:
        """Results for every request ``(items, task, steps)``: (canonical, text) items on
        one task at one budget, every seed.

        Returns {(canonical, task, seed, steps): row}.  Reads the store first;
        runs the chunks with missing results -- of all the requests in one batch
        of jobs, so a worker that finishes one task's jobs goes on to the next
        task's instead of waiting at a barrier per task; records them as they arrive.
        """
        split = self.config.split
        jobs: list[Job] = []
        canon_of: dict[str, str] = {}
        found: dict = {}
        for items, task_name, steps in requests:
            keys = [(c, task_name, s, steps, split) for c, _ in items for s in self.seeds]
            cached = self.store.cached_evaluations(self.run_id, keys)
            found.update(cached)
            # Chunks are formed over the candidates that are new in this generation.
            new = [(c, t) for c, t in items
                   if not all((c, task_name, s, steps, split) in cached and
                              cached[(c, task_name, s, steps, split)]["generation"] < generation for s in self.seeds)
                   or generation < 0]
            # as few chunks as chunk_size allows, of equal sizes (within one): no short last job
            # leaves a worker idle while the others train full ones
            n_chunks = -(-len(new) // self.config.chunk_size)
            bounds = [j * len(new) // n_chunks for j in range(n_chunks + 1)] if n_chunks else [0]
            for seed in self.seeds:
                for lo, hi in zip(bounds, bounds[1:]):
                    chunk = new[lo:hi]
                    if all((c, task_name, seed, steps, split) in cached for c, _ in chunk):
                        continue
                    jobs.append(Job(task_name, seed, steps, split, tuple(t for _, t in chunk), index=len(jobs)))
            canon_of.update({t: c for c, t in new})
        if jobs:
            t0 = time.perf_counter()
            lost = []  # jobs lost to the infrastructure: recorded as such, never scored; the run stops
            for report in self.evaluator.map(jobs):
                job = report.job
                if report.infra:
                    lost.append(report)
                rows = []
                for text, outcome in zip(job.entries, report.outcomes):
                    row = dict(run_id=self.run_id, generation=generation, canonical=canon_of[text], expr=text,
                               task=job.task, seed=job.seed, steps=job.steps, split=job.split,
                               metric=outcome.metric, status=outcome.status, error=outcome.error,
                               train_time=outcome.train_time, wall_time=report.wall_time, worker=report.worker)
                    rows.append(row)
                    found[(row["canonical"], job.task, job.seed, job.steps, job.split)] = row
                self.store.record_evaluations(rows)
                self.evaluations_run += len(rows)
                self.worker_wall += report.wall_time
                self.on_progress(len(rows))
            self.ray_wall += time.perf_counter() - t0
            if lost:
                raise InfraError.from_reports(lost, generation)
        return {(c, t, s, st): row for (c, t, s, st, _sp), row in found.items()}

    def _metrics(self, canon: str, results: dict, steps_by_task: dict) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for task_name, steps in steps_by_task.items():
            vals = [results.get((canon, task_name, s, steps)) for s in self.seeds]
            if any(v is None or v["metric"] is None for v in vals):
                out[task_name] = None
            else:
                out[task_name] = sum(v["metric"] for v in vals) / len(vals)
        return out

    def _fitness(self, metrics: dict[str, float | None], steps_by_task: dict) -> float:
        scores = {t: task_score(m, self.baselines[(t, steps_by_task[t])], self.tasks[t].direction)
                  for t, m in metrics.items()}
        return aggregate(scores, self.config.aggregate)

    def _cases(self, canon: str, results: dict, steps_by_task: dict) -> dict[str, float]:
        """Score per case (task, evaluation seed) against the task's baseline at that budget."""
        out = {}
        for t, steps in steps_by_task.items():
            for s in self.seeds:
                row = results.get((canon, t, s, steps))
                out[f"{t}@{s}"] = task_score(row["metric"] if row else None, self.baselines[(t, steps)],
                                             self.tasks[t].direction)
        return out

    def _stage(self, items, steps_by_task, generation) -> dict[str, tuple[float, dict, dict]]:
        results = self._evaluate([(items, t, steps_by_task[t]) for t in self.tasks], generation)
        out = {}
        for canon, _ in items:
            metrics = self._metrics(canon, results, steps_by_task)
            out[canon] = (self._fitness(metrics, steps_by_task), metrics, self._cases(canon, results, steps_by_task))
        return out

    # ------------------------------------------------------------ a generation
    def score(self, proposals: Sequence, generation: int) -> tuple[list[Scored], dict]:
        seen: dict[str, str] = {}
        verdicts: list[Verdict] = []
        unique: list[tuple[str, str]] = []
        for prop in proposals:
            v = self.filter.check(prop.expr, seen)
            verdicts.append(v)
            if v.status == "ok":
                seen[prop.expr.canonical] = prop.expr.canonical
                unique.append((prop.expr.canonical, str(prop.expr)))
        # Fingerprint duplicates of earlier generations' candidates need that
        # representative's results, which the store has under its canonical form.
        reps = {v.duplicate_of for v in verdicts if v.status == "fingerprint_duplicate"}
        extra = [(c, c) for c in sorted(reps - set(seen))]

        results: dict[str, tuple[float, dict, int, dict]] = {}
        promoted = unique + extra
        if self.short_steps:
            short = self._stage(unique + extra, self.short_steps, generation)
            for canon, (fit, metrics, cases) in short.items():
                results[canon] = (fit, metrics, 1, cases)
            ranked = sorted(range(len(unique)), key=lambda i: -short[unique[i][0]][0])
            n_promote = max(1, math.ceil(self.config.promote_fraction * len(unique))) if unique else 0
            keep = sorted(ranked[:n_promote])
            promoted = [unique[i] for i in keep] + extra
            # Candidates already trained on the full budget in earlier generations keep it.
            already = self.store.cached_evaluations(self.run_id, [
                (c, t, s, self.full_steps[t], self.config.split) for c, _ in unique for t in self.tasks
                for s in self.seeds])
            full_known = {c for c, _ in unique if all((c, t, s, self.full_steps[t], self.config.split) in already
                                                      for t in self.tasks for s in self.seeds)}
            promoted += [u for u in unique if u[0] in full_known and u not in promoted]
        full = self._stage(promoted, self.full_steps, generation)
        for canon, (fit, metrics, cases) in full.items():
            results[canon] = (fit, metrics, 2, cases)

        scored: list[Scored] = []
        for prop, v in zip(proposals, verdicts):
            if v.status in ("ok", "duplicate", "fingerprint_duplicate"):
                canon = v.duplicate_of or prop.expr.canonical
                fit, metrics, fidelity, cases = results[canon]
                status = "ok" if all(m is not None for m in metrics.values()) else "failed"
                if v.status != "ok":
                    status = v.status
                scored.append(Scored(prop.expr, prop.origin, status, fit, fidelity, metrics, v.detail, cases))
            else:
                scored.append(Scored(prop.expr, prop.origin, v.status, REJECTED_FITNESS, 0, {}, v.detail))
        stats = count_reasons(verdicts)
        stats["evaluated"] = len(unique)
        stats["promoted"] = len(promoted) if self.short_steps else len(unique)
        stats["failed"] = sum(1 for s in scored if s.status == "failed")
        return scored, stats
