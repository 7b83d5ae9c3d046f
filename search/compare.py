"""Compare losses on tasks: held-out scores over seeds, with honest statistics.

``compare(tasks, losses, seeds=10)`` trains one model per loss, task and
seed (the losses of a task are trained together, population-batched, by
``Task.evaluate``) and scores it on the held-out ``split`` ("test" by
default).  Seeds are the integers ``0 .. seeds-1`` (or the list given); with
the same seed every loss starts from the same initial weights and sees the
same minibatches, so the scores are paired by seed.

For each task and loss (a *cell*) it reports the mean and the standard
deviation (ddof=1) of the metric over the seeds that trained, the 95%
Student-t interval ``mean +- t(0.975, n-1) * sd / sqrt(n)``, the rank within
the task (1 = best in the metric's direction; ties share the lower rank), and
two paired tests against the task's default baseline (``task.baseline``:
cross_entropy, bce_with_logits or mse, trained even if not listed), on the
seeds where both trained: the paired t-test (``scipy.stats.ttest_rel``) and
the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, zero differences
dropped; p = 1 when every difference is zero, nan with fewer than 2 pairs).
A loss that cannot train a task's kind (a regression loss on digits) is
"n/a" there; seeds on which a loss diverged or failed are counted and shown.

It trains models, so it lives in the ``search`` layer (which may import
``losses`` and ``tasks``).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from lossforge.primitives import Expr, did_you_mean

from lossforge.losses import Loss
from lossforge.losses.errors import CompareError, LossNotFound

SPLITS = ("train", "val", "test")


@dataclass
class Cell:
    """The results of one loss on one task over the seeds."""

    task: str
    loss: str
    metric: str
    direction: str  # "max" or "min"
    applicable: bool = True
    is_baseline: bool = False
    added: bool = False            # the baseline, trained although not asked for
    values: list[float] = field(default_factory=list)   # metric of each seed that trained, in seed order
    seeds_ok: list[int] = field(default_factory=list)
    n_seeds: int = 0
    n_diverged: int = 0
    n_error: int = 0
    errors: list[str] = field(default_factory=list)     # distinct messages
    mean: float = math.nan
    sd: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    rank: float | None = None
    n_pairs: int = 0
    delta: float = math.nan        # mean paired difference, loss - baseline
    delta_low: float = math.nan    # its 95% Student-t interval over the pairs
    delta_high: float = math.nan
    p_ttest: float = math.nan
    p_wilcoxon: float = math.nan

    @property
    def n_ok(self) -> int:
        return len(self.values)

    @property
    def n_failed(self) -> int:
        return self.n_diverged + self.n_error


@dataclass
class Comparison:
    """What :func:`compare` returns: raw rows, one :class:`Cell` per task and loss, and renderers."""

    tasks: list[str]
    losses: list[str]              # as asked for, in order (baselines added per task are in cells only)
    seeds: list[int]
    split: str
    steps: dict[str, int]
    baselines: dict[str, str]
    rows: list[dict]
    cells: dict[tuple[str, str], Cell]

    def cell(self, task: str, loss: str) -> Cell:
        try:
            return self.cells[(task, loss)]
        except KeyError:
            raise CompareError(f"no result for loss '{loss}' on task '{task}'") from None

    def task_cells(self, task: str) -> list[Cell]:
        """The cells of a task: the losses asked for, then an added baseline."""
        return [c for (t, _), c in self.cells.items() if t == task]

    # rendering lives in compare_report (tables, Markdown, CSV, plots)
    def table(self) -> str:
        from .compare_report import terminal_table

        return terminal_table(self)

    def markdown(self, images: dict[str, str] | None = None) -> str:
        from .compare_report import markdown

        return markdown(self, images)

    def raw_csv(self) -> str:
        from .compare_report import raw_csv

        return raw_csv(self)

    def summary_csv(self) -> str:
        from .compare_report import summary_csv

        return summary_csv(self)

    def write(self, out: str | Path) -> list[Path]:
        """Write compare.md, compare.csv (raw), compare_summary.csv and one PNG per task to ``out``."""
        from .compare_report import write

        return write(self, Path(out))


# ----------------------------------------------------------------------------- statistics
def interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, sd, low, high): the sample mean, standard deviation (ddof=1) and
    Student-t interval; sd and the interval are nan for fewer than 2 values."""
    from scipy import stats

    n = len(values)
    if n == 0:
        return (math.nan,) * 4
    mean = math.fsum(values) / n
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def paired_tests(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(mean difference a - b, paired t-test p, Wilcoxon signed-rank p) of paired samples."""
    from scipy import stats

    if len(a) != len(b):
        raise CompareError(f"paired samples differ in length ({len(a)} vs {len(b)})")
    n = len(a)
    if n == 0:
        return math.nan, math.nan, math.nan
    diffs = [x - y for x, y in zip(a, b)]
    delta = math.fsum(diffs) / n
    if n < 2:
        return delta, math.nan, math.nan
    if all(d == 0 for d in diffs):  # identical results: no evidence of a difference (scipy would give nan)
        return delta, 1.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant non-zero differences: t is infinite, p is 0
        p_t = float(stats.ttest_rel(a, b).pvalue)
        try:
            p_w = float(stats.wilcoxon(diffs, zero_method="wilcox", alternative="two-sided").pvalue)
        except ValueError:  # degenerate (e.g. too few non-zero differences for this scipy)
            p_w = math.nan
    return delta, p_t, p_w


def rank(values: dict[str, float], direction: str) -> dict[str, float]:
    """Rank 1 = best; higher is better for direction "max". Ties share the lower rank."""
    from scipy import stats

    finite = {k: v for k, v in values.items() if math.isfinite(v)}
    if not finite:
        return {}
    keys = list(finite)
    scores = [-finite[k] if direction == "max" else finite[k] for k in keys]
    return {k: float(r) for k, r in zip(keys, stats.rankdata(scores, method="min"))}


# ----------------------------------------------------------------------------- resolving names
def _resolve_tasks(tasks) -> list:
    from lossforge.tasks import Task

    if isinstance(tasks, (str, Task)):
        tasks = [tasks]
    items = [t.strip() if isinstance(t, str) else t
             for item in tasks for t in (item.split(",") if isinstance(item, str) else [item])]
    items = [t for t in items if not (isinstance(t, str) and not t)]
    if not items:
        raise CompareError("no tasks to compare on; name at least one (see `lossforge tasks`)")
    from .errors import ConfigError
    from .taskref import resolve_task

    resolved, seen = [], set()
    for t in items:
        if isinstance(t, str):  # a built-in name or the user's "module:function" task factory
            try:
                t = resolve_task(t)
            except ConfigError as exc:
                raise CompareError(str(exc)) from None
        elif not isinstance(t, Task):
            raise CompareError(f"a task must be a task name or a Task, got {type(t).__name__}")
        if t.name in seen:
            raise CompareError(f"task '{t.name}' is listed twice")
        seen.add(t.name)
        resolved.append(t)
    return resolved


def _label(loss) -> str:
    return loss.name if isinstance(loss, Loss) else str(loss)


def _resolve_losses(losses) -> list:
    """Loss names, expression text, ``Loss`` or ``Expr`` objects (a string may list several, comma-separated)."""
    from lossforge.losses.lookup import loss_or_expr, split_losses

    if isinstance(losses, (str, Loss, Expr)):
        losses = [losses]
    items = [x for item in losses for x in (split_losses(item) if isinstance(item, str) else [item])]
    if not items:
        raise CompareError("no losses to compare; name at least one (see `lossforge catalogue`) or give an "
                           "expression such as '(p - y)**2'")
    resolved, seen = [], set()
    for x in items:
        if isinstance(x, str):
            try:
                x = loss_or_expr(x)  # a typo in an expression raises the parser's GrammarError
            except LossNotFound as exc:
                raise CompareError(str(exc)) from None
        elif not isinstance(x, (Loss, Expr)):
            raise CompareError(f"a loss must be a loss name, expression text, a Loss or an Expr, "
                               f"got {type(x).__name__}")
        if _label(x) in seen:
            raise CompareError(f"loss '{_label(x)}' is listed twice")
        seen.add(_label(x))
        resolved.append(x)
    return resolved


def applies(loss, task) -> bool:
    """Whether ``loss`` can train a model for ``task`` (an expression trains every kind)."""
    if isinstance(loss, Expr):
        return True
    kinds = tuple(loss.task_kinds)
    return task.kind in kinds or (task.kind == "segmentation" and "binary" in kinds)


def _seed_list(seeds) -> list[int]:
    if isinstance(seeds, bool):
        raise CompareError(f"seeds must be a positive number of seeds or a list of seeds, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise CompareError(f"seeds = {seeds}: compare over at least 1 seed (10 or more for useful statistics)")
        return list(range(seeds))
    try:
        out = [int(s) for s in seeds]
    except (TypeError, ValueError):
        raise CompareError(f"seeds must be a positive number of seeds or a list of seeds, got {seeds!r}") from None
    if not out or any(s < 0 for s in out) or len(set(out)) != len(out):
        raise CompareError(f"seeds {seeds!r} must be distinct non-negative integers")
    return out


# ----------------------------------------------------------------------------- the comparison
def compare(tasks, losses, seeds: int | Iterable[int] = 10, split: str = "test", steps: int | None = None,
            out: str | Path | None = None, *, device=None,
            on_progress: Callable[[str], None] | None = None) -> Comparison:
    """Every loss on every task over seeds ``0 .. seeds-1``, scored on ``split``.

    ``tasks``: task names (or ``Task`` objects; a comma-separated string works);
    ``losses``: loss names or expression text (``"(p - y)**2"``), ``Loss``
    or ``Expr`` objects; text that does not parse raises ``GrammarError``.  ``steps``
    overrides each task's training budget.  With ``out``, writes compare.md,
    compare.csv (one row per task, loss and seed), compare_summary.csv and a
    PNG per task there.  Unknown names raise :class:`CompareError` with a
    suggestion.  See the module docstring for the statistics.
    """
    if split not in SPLITS:
        raise CompareError(f"unknown split {split!r}{did_you_mean(str(split), SPLITS)}; use one of "
                           f"{', '.join(SPLITS)} (test: held-out data)")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise CompareError(f"steps = {steps!r} must be a positive integer (or None for each task's budget)")
    task_list = _resolve_tasks(tasks)
    loss_list = _resolve_losses(losses)
    seed_list = _seed_list(seeds)
    from lossforge.losses import get

    rows: list[dict] = []
    cells: dict[tuple[str, str], Cell] = {}
    baselines: dict[str, str] = {}
    budget: dict[str, int] = {}
    for task in task_list:
        if split == "test" and getattr(task, "X_test", None) is None:
            raise CompareError(f"task '{task.name}' has no test split; compare on split='val'")
        baselines[task.name] = task.baseline
        budget[task.name] = steps if steps is not None else task.steps
        entries = list(loss_list)
        if task.baseline not in {_label(x) for x in entries}:
            entries.append(get(task.baseline))
        trained = []
        for x in entries:
            label = _label(x)
            cell = Cell(task.name, label, task.metric, task.direction, applicable=applies(x, task),
                        is_baseline=label == task.baseline, added=x not in loss_list)
            cells[(task.name, label)] = cell
            if cell.applicable:
                trained.append(x)
        for i, seed in enumerate(seed_list):
            if on_progress is not None:
                on_progress(f"{task.name}: seed {seed} ({i + 1}/{len(seed_list)}), {len(trained)} losses")
            results = task.evaluate(trained, seed=seed, steps=steps, split=split, device=device)
            for x, r in zip(trained, results):
                cell = cells[(task.name, _label(x))]
                cell.n_seeds += 1
                ok = r.status == "ok" and math.isfinite(r.metric)
                # a non-finite metric reported as "ok" counts as diverged
                status = "ok" if ok else ("error" if r.status == "error" else "diverged")
                if ok:
                    cell.values.append(float(r.metric))
                    cell.seeds_ok.append(seed)
                elif status == "diverged":
                    cell.n_diverged += 1
                else:
                    cell.n_error += 1
                if not ok and r.error and r.error not in cell.errors:
                    cell.errors.append(r.error)
                rows.append({"task": task.name, "loss": _label(x), "seed": seed, "split": split,
                             "steps": budget[task.name], "metric_name": task.metric,
                             "metric": float(r.metric) if ok else None, "status": status,
                             "error": r.error or "", "train_time": r.train_time})
        _summarise(task, [cells[(task.name, _label(x))] for x in entries])
    comparison = Comparison(tasks=[t.name for t in task_list], losses=[_label(x) for x in loss_list],
                            seeds=seed_list, split=split, steps=budget, baselines=baselines, rows=rows, cells=cells)
    if out is not None:
        comparison.write(out)
    return comparison


def _summarise(task, cells: list[Cell]) -> None:
    for c in cells:
        c.mean, c.sd, c.ci_low, c.ci_high = interval(c.values)
    ranks = rank({c.loss: c.mean for c in cells if c.applicable}, task.direction)
    base = next(c for c in cells if c.is_baseline)
    base_by_seed = dict(zip(base.seeds_ok, base.values))
    for c in cells:
        c.rank = ranks.get(c.loss)
        if c.is_baseline or not c.applicable:
            continue
        pairs = [(v, base_by_seed[s]) for s, v in zip(c.seeds_ok, c.values) if s in base_by_seed]
        c.n_pairs = len(pairs)
        c.delta, c.p_ttest, c.p_wilcoxon = paired_tests([a for a, _ in pairs], [b for _, b in pairs])
        _, _, c.delta_low, c.delta_high = interval([a - b for a, b in pairs])


def from_csv(path: str | Path) -> Comparison:
    """Rebuild a comparison from the raw ``compare.csv`` it wrote (one row per task, loss and seed),
    to render its tables and plots again without training; each task's direction and baseline come
    from the task itself (built-in names, or what :func:`_resolve_tasks` accepts)."""
    import csv

    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            raw = list(csv.DictReader(fh))
    except OSError as exc:
        raise CompareError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not raw or not {"task", "loss", "seed", "metric", "status"} <= set(raw[0]):
        raise CompareError(f"{path} is not a compare.csv written by lossforge compare")
    order = lambda key: list(dict.fromkeys(r[key] for r in raw))  # noqa: E731 - first-seen order
    task_list = _resolve_tasks(order("task"))
    labels = order("loss")
    rows, cells, baselines, budget = [], {}, {}, {}
    for r in raw:
        metric = float(r["metric"]) if r["metric"] not in ("", None) else None
        rows.append({**r, "seed": int(r["seed"]), "steps": int(r["steps"]), "metric": metric,
                     "train_time": float(r["train_time"]) if r.get("train_time") else None})
    for task in task_list:
        baselines[task.name] = task.baseline
        mine = [r for r in rows if r["task"] == task.name]
        budget[task.name] = mine[0]["steps"]
        trained = set(r["loss"] for r in mine)
        for label in labels + ([task.baseline] if task.baseline not in labels else []):
            cells[(task.name, label)] = Cell(task.name, label, task.metric, task.direction,
                                             applicable=label in trained, is_baseline=label == task.baseline)
        for r in mine:
            cell = cells[(task.name, r["loss"])]
            cell.n_seeds += 1
            if r["status"] == "ok" and r["metric"] is not None:
                cell.values.append(r["metric"])
                cell.seeds_ok.append(r["seed"])
            elif r["status"] == "error":
                cell.n_error += 1
            else:
                cell.n_diverged += 1
            if r.get("error") and r["error"] not in cell.errors:
                cell.errors.append(r["error"])
        _summarise(task, [c for (t, _), c in cells.items() if t == task.name])
    seeds = sorted({r["seed"] for r in rows})
    return Comparison(tasks=[t.name for t in task_list], losses=labels, seeds=seeds, split=rows[0]["split"],
                      steps=budget, baselines=baselines, rows=rows, cells=cells)
