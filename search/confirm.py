"""Confirmation: re-train the hall of fame's best next to the baseline before claiming anything.

A search ranks candidates on a few evaluation seeds, often one; the best of
hundreds of candidates on one seed is partly the luckiest (the winner's
curse).  After the search (and any constant tuning) the top ``confirm_top``
entries are trained again on the full budget, on ``confirm_seeds`` fresh
seeds drawn in the driver from the run's seed (never the search's own seeds),
on the search's split, together with each task's baseline loss on the same
seeds, by the run's own evaluator (local or Ray).  Per task a paired t-test
(:func:`lossforge.search.compare.paired_tests`) compares the candidate's
metric with the baseline's, seed by seed.

Rule ``aggregate`` (the default): confirmed when the aggregate score of the
confirmation means (the search's own fitness formula: the ``aggregate`` of
log(error_baseline / error_candidate) over tasks) is above 0 and no task is
significantly worse than the baseline (p < ``confirm_alpha``).  Rule
``significant`` also requires one task significantly better.  A candidate that
fails to train on any confirmation seed is not confirmed.

Every training is recorded in the run store (generation ``CONFIRM_GENERATION``)
as it arrives; a resumed run reads them back and trains nothing twice.  The
verdicts go to ``confirmation.json`` in the run directory and onto the hall of
fame's entries (``Entry.confirmation``), which the CSV and the CLI show.
"""
from __future__ import annotations

import math

from .evaluators import LOSS_PREFIX
from .fitness import aggregate, task_score

CONFIRM_GENERATION = -2
CONFIRM_SALT = 3   # derive_seeds salt: 1 search evaluation seeds, 2 strategy seed


def confirm_hall_of_fame(*, config, scorer, hof, seeds: list[int], progress=None) -> list[dict]:
    """Confirm the top ``config.confirm_top`` entries; sets ``entry.confirmation`` and returns the verdicts."""
    from .compare import paired_tests
    from .scoring import Scorer

    entries = hof.entries[: config.confirm_top]
    if not entries:
        return []
    check = Scorer(config=config, tasks=scorer.tasks, evaluator=scorer.evaluator, store=scorer.store,
                   run_id=scorer.run_id, seeds=seeds, candidate_filter=scorer.filter, on_progress=scorer.on_progress)
    if progress is not None:
        progress.note(f"confirming the top {len(entries)} on {len(seeds)} fresh seeds next to the baseline")
    per_task, requests = {}, []
    for name, task in scorer.tasks.items():
        base = LOSS_PREFIX + task.baseline
        items = [(base, base)] + [(e.canonical, e.expr) for e in entries]
        per_task[name] = (task, base, check.full_steps[name])
        requests.append((items, name, check.full_steps[name]))
    rows = check._evaluate(requests, generation=CONFIRM_GENERATION)   # every task's jobs in one batch
    verdicts = []
    for entry in entries:
        tasks_out, scores, failed = {}, {}, []
        for name, (task, base, steps) in per_task.items():
            cand = [rows[(entry.canonical, name, s, steps)]["metric"] for s in seeds]
            ref = [rows[(base, name, s, steps)]["metric"] for s in seeds]
            if any(m is None for m in cand):
                failed.append(name)
                tasks_out[name] = {"baseline": task.baseline, "mean": None, "baseline_mean": _mean(ref),
                                   "delta": None, "p_value": None, "status": "failed"}
                scores[name] = task_score(None, _mean(ref), task.direction)
                continue
            delta, p_t, _ = paired_tests(cand, ref)
            better = delta > 0 if task.direction == "max" else delta < 0
            tasks_out[name] = {"baseline": task.baseline, "mean": _mean(cand), "baseline_mean": _mean(ref),
                               "delta": delta, "p_value": p_t, "status": "ok",
                               "significant": bool(math.isfinite(p_t) and p_t < config.confirm_alpha),
                               "better": bool(better)}
            scores[name] = task_score(_mean(cand), _mean(ref), task.direction)
        fitness = aggregate(scores, config.aggregate)
        worse = [t for t, r in tasks_out.items() if r["status"] == "ok" and r["significant"] and not r["better"]]
        sig_better = [t for t, r in tasks_out.items() if r["status"] == "ok" and r["significant"] and r["better"]]
        if failed:
            ok, reason = False, f"failed to train on {', '.join(failed)}"
        elif worse:
            ok, reason = False, f"significantly worse than the baseline on {', '.join(worse)}"
        elif not fitness > 0:
            ok, reason = False, f"aggregate {fitness:+.4f} is not above the baseline's 0"
        elif config.confirm_rule == "significant" and not sig_better:
            ok, reason = False, f"better on the aggregate but on no task significantly (p < {config.confirm_alpha})"
        else:
            ok, reason = True, (f"aggregate {fitness:+.4f} > 0, no task significantly worse"
                                + (f", significantly better on {', '.join(sig_better)}" if sig_better else ""))
        verdict = {"canonical": entry.canonical, "expr": entry.expr, "confirmed": ok, "reason": reason,
                   "fitness": fitness, "search_fitness": entry.fitness, "seeds": list(seeds),
                   "rule": config.confirm_rule, "alpha": config.confirm_alpha, "split": config.split,
                   "tasks": tasks_out}
        entry.confirmation = verdict
        verdicts.append(verdict)
        if progress is not None:
            progress.note(f"{'confirmed' if ok else 'not confirmed'}: {entry.expr} ({reason})")
    return verdicts


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return math.fsum(vals) / len(vals) if vals else None


def storefile_table(verdict: dict) -> dict:
    """The ``[confirmation]`` table of a stored loss: seeds, baseline(s), and per task mean,
    baseline_mean, delta, p_value."""
    baselines = sorted({r["baseline"] for r in verdict["tasks"].values()})
    return {
        "seeds": list(verdict["seeds"]),
        "baseline": baselines[0] if len(baselines) == 1 else ", ".join(baselines),
        "split": verdict["split"], "rule": verdict["rule"], "alpha": verdict["alpha"],
        "fitness": verdict["fitness"], "confirmed": verdict["confirmed"],
        "tasks": {t: {k: r[k] for k in ("baseline", "mean", "baseline_mean", "delta", "p_value") if r[k] is not None}
                  for t, r in verdict["tasks"].items()},
    }
