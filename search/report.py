"""A report of a finished (or interrupted) search, from its run directory.

``report(run_dir)`` reads the run's files (``run.json``, ``config.toml``,
``hall_of_fame.csv``, ``pareto.csv``) and its run store (read-only use of
:class:`~lossforge.search.runstore.RunStore`) and writes, to ``out``
(default ``RUN_DIR/report``):

``fitness.png``  best and median fitness per generation (0 = the baseline's level)
``filters.png``  what happened to each generation's candidates: rejected by
                 which filter, or trained
``pareto.png``   fitness against complexity of every fully trained candidate,
                 with the Pareto front
``shapes.png``   the top losses' shapes: L(p, y=1) and L(p, y=0) against p for
                 classification, L(r, 0) against the residual r for regression
``report.md``    a Markdown summary linking the figures
``report.html``  one self-contained page (figures embedded, no network) with the
                 hall of fame (confirmed figures next to search fitness when the
                 run confirmed its best), per-generation fitness and filter
                 counts, the Pareto front, loss shapes, the run's Optuna studies
                 and its config (:mod:`lossforge.search.html_report`;
                 ``lossforge report RUN_DIR --watch`` rewrites it as a search runs)

Labels never get cut off: long expressions are wrapped, or drawn as a key
(``#3``) with the full text in a legend under the plot (:mod:`.charts`).
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from lossforge.losses.plotting import figure, save_png

from .config import SearchConfig
from .errors import StorageError
from .fitness import fitness_name
from .runstore import RunStore, open_run_store

BASELINE_PREFIX = "loss:"  # how the scorer records baseline evaluations in the run store
TOP_SHAPES = 4
_BASELINE_EXPR = {"probability": "-y*log(p)", "real": "(p - y)**2"}


@dataclass
class Report:
    """What :func:`report` wrote."""

    run_dir: Path
    out: Path
    run_id: str
    markdown: Path
    figures: list[Path] = field(default_factory=list)
    html: Path | None = None

    @property
    def files(self) -> list[Path]:
        return [*self.figures, self.markdown, *([self.html] if self.html else [])]


# ----------------------------------------------------------------------------- reading the run
def _read_meta(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    if not run_dir.is_dir():
        raise StorageError(f"run directory {run_dir} does not exist")
    if not path.exists():
        raise StorageError(f"{run_dir} is not a lossforge run directory (no run.json); give the directory a "
                           "search wrote, e.g. runs/search-...")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StorageError(f"{path} is corrupt ({exc}); the report needs its run id and store") from None
    if not isinstance(meta, dict) or "run_id" not in meta:
        raise StorageError(f"{path} has no run_id; it is not a lossforge run file")
    return meta


def _open_store(run_dir: Path, meta: dict) -> RunStore:
    """The run's own store: a run-local ``runs.db`` is the one inside ``run_dir``
    (a copied or moved run never reads the original's); missing or damaged, it is
    an error naming the file."""
    configured = _read_config(run_dir).store
    return open_run_store(run_dir, meta.get("store"), configured)


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _finite_or_zero(v) -> float:
    f = _float(v)
    return f if math.isfinite(f) else 0.0


def _read_config(run_dir: Path) -> SearchConfig:
    """The run's settings; its tasks stay names and references (no user code runs for a report)."""
    from .config import tasks_unresolved

    with tasks_unresolved():
        return SearchConfig.from_toml(run_dir / "config.toml")


def _space(tasks: list[tuple[str, str | None]]) -> str:
    return "real" if tasks and tasks[0][1] == "regression" else "probability"


# ----------------------------------------------------------------------------- figures
def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def fitness_plot(generations: list[dict], path: Path, search_generations: int | None = None) -> Path:
    """Best and median fitness per generation; batches after ``search_generations``
    (constant tuning) are shaded and labelled."""
    fig, ax = figure(7.5, 4.0)
    gens = [g["generation"] for g in generations]
    for key, style in (("best", "o-"), ("median", "s--")):
        values = [_float(g.get(key)) for g in generations]
        ax.plot(gens, values, style, label=f"{key} of the generation's trained candidates")
    ax.axhline(0.0, color="gray", lw=0.8, ls=":", label="baseline level (0)")
    if search_generations is not None and gens and max(gens) >= search_generations:
        ax.axvspan(search_generations - 0.5, max(gens) + 0.5, color="tab:purple", alpha=0.08,
                   label="constant tuning (Optuna)")
    _integer_ticks(ax)
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness (log error ratio vs baseline, over tasks)")
    ax.set_title("fitness per generation (> 0 beats the baseline)")
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)  # off the data
    return save_png(fig, path)


def filter_reasons(generations: list[dict]) -> list[str]:
    """Rejection reasons seen in any generation, in first-seen order (plus 'evaluated' last)."""
    skip = {"evaluated", "promoted", "failed"}
    reasons: list[str] = []
    for g in generations:
        for k in g.get("filters", {}):
            if k not in skip and k not in reasons:
                reasons.append(k)
    return reasons + ["evaluated"]


def filters_plot(generations: list[dict], path: Path) -> Path:
    fig, ax = figure(8.5, 4.0)
    gens = [g["generation"] for g in generations]
    bottom = [0.0] * len(gens)
    for reason in filter_reasons(generations):
        counts = [float(g.get("filters", {}).get(reason, 0) or 0) for g in generations]
        if not any(counts):
            continue
        ax.bar(gens, counts, bottom=bottom, label="trained" if reason == "evaluated" else reason.replace("_", " "))
        bottom = [b + c for b, c in zip(bottom, counts)]
    _integer_ticks(ax)
    ax.set_xlabel("generation")
    ax.set_ylabel("candidates")
    ax.set_title("candidates per generation: rejected by filter, or trained")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # never over a bar
    return save_png(fig, path)


def pareto_plot(candidates: list[dict], front: list[dict], path: Path) -> Path:
    """Every fully trained candidate (grey) and the Pareto front (red), each front point
    numbered #k, with its expression in full in the legend under the plot."""
    from .charts import figure_with_notes

    notes = [f"#{i}  c={r.get('complexity', '?')}  fitness {_fmt(r.get('fitness'))}:  {r['expr']}"
             for i, r in enumerate(front, 1)]
    fig, (ax,) = figure_with_notes(8.0, 4.5, notes=notes)
    pts = [(c["complexity"], c["fitness"]) for c in candidates
           if c.get("fidelity") == 2 and c.get("complexity") is not None and math.isfinite(_float(c.get("fitness")))]
    if pts:
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=12, color="lightgray", label="trained candidates")
    fx = [_float(r["complexity"]) for r in front]
    fy = [_float(r["fitness"]) for r in front]
    if front:
        ax.step(fx, fy, "o-", where="post", color="tab:red", label="Pareto front (#k: see below)")
        for i, (x, y) in enumerate(zip(fx, fy), 1):
            ax.annotate(f"#{i}", (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points", color="tab:red")
    ax.axhline(0.0, color="gray", lw=0.8, ls=":", label="baseline level")
    _integer_ticks(ax)
    ax.set_xlabel("complexity (nodes of the expression)")
    ax.set_ylabel("fitness (log error ratio vs baseline, over tasks)")
    ax.set_title("fitness against complexity")
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)  # off the data
    return save_png(fig, path)


def loss_curves(expr_text: str, space: str):
    """(x, curves) for one expression: {"y=1": ..., "y=0": ...} over p, or {"y=0": ...} over the residual."""
    import torch

    from lossforge.primitives import parse

    program = parse(expr_text).compile()
    if space == "probability":
        x = torch.linspace(1e-3, 1 - 1e-3, 200, dtype=torch.float64)
        curves = {f"y={v}": program(x, torch.full_like(x, float(v))) for v in (1, 0)}
    else:
        x = torch.linspace(-3.0, 3.0, 200, dtype=torch.float64)
        curves = {"y=0": program(x, torch.zeros_like(x))}
    return x.tolist(), {k: v.detach().tolist() for k, v in curves.items()}


def _robust_limits(values: list[float]) -> tuple[float, float] | None:
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return None
    lo = finite[int(0.02 * (len(finite) - 1))]
    hi = finite[int(0.98 * (len(finite) - 1))]
    pad = (hi - lo) * 0.1 or abs(hi) * 0.1 or 1.0
    return lo - pad, hi + pad


def shapes_plot(exprs: list[str], space: str, path: Path) -> Path:
    from .charts import figure_with_notes, fit_labels

    panels = ["y=1", "y=0"] if space == "probability" else ["y=0"]
    baseline = _BASELINE_EXPR[space]
    texts = [*exprs, baseline]
    shown, notes = fit_labels(texts, width=40, tags=[f"#{i + 1}" for i in range(len(exprs))] + ["baseline"])
    fig, axes = figure_with_notes(5.5 * len(panels), 4.3, cols=len(panels), notes=notes)
    for ax, panel in zip(axes, panels):
        seen: list[float] = []
        for i, text in enumerate(texts):
            try:
                x, curves = loss_curves(text, space)
            except Exception:  # noqa: BLE001 - one unplottable expression must not stop the report
                continue
            ax.plot(x, curves[panel], "k:" if i == len(exprs) else "-", label=shown[i])
            seen += curves[panel]
        limits = _robust_limits(seen)
        if limits:
            ax.set_ylim(*limits)
        ax.set_xlabel("p (predicted probability)" if space == "probability" else "residual r = p - y")
        ax.set_ylabel("L (per element)")
        ax.set_title(f"L(p, {panel[-1]})" if space == "probability" else "L(r, 0)")
        ax.legend(fontsize="x-small")
    return save_png(fig, path)


# ----------------------------------------------------------------------------- Markdown
def _md_row(values) -> str:
    return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"


def _fmt(v, digits: int = 4) -> str:
    f = _float(v)
    return "-" if not math.isfinite(f) else f"{f:.{digits}f}"


def _saved_losses(run_id: str) -> list[str]:
    try:
        from lossforge.losses import get, names

        return [n for n in names(kind="discovered") if get(n).provenance.get("run_id") == run_id]
    except Exception:  # noqa: BLE001 - the store is optional for a report
        return []


def _markdown(run_dir, meta, config, row, generations, hof, front, tasks, baselines, n_evals, figures, space,
              saved) -> str:
    out = [f"# Search report: {meta['run_id']}", "",
           f"- run directory: `{run_dir}`",
           f"- status: {row.get('status', '?') if row else '?'}; {n_evals} evaluations recorded",
           f"- config: `{config.name}` (digest {meta.get('config_digest', '?')}), strategy {config.strategy}, "
           f"{config.generations} generations x {config.population} candidates",
           f"- tasks: {', '.join(tasks)}; steps: {config.steps or 'task default'}; split: {config.split}; "
           f"evaluation seeds: {', '.join(map(str, meta.get('eval_seeds', [])))}",
           f"- wall time of the generations: {sum(_finite_or_zero(g.get('wall_time')) for g in generations):.1f} s",
           f"- lossforge {meta.get('version', '?')}"]
    if baselines:
        out.append("- baselines: " + ", ".join(f"{t} {name} = {_fmt(v)}" for t, (name, v) in baselines.items()))
    if saved:
        out.append("- saved to the loss store as: " + ", ".join(f"`{n}`" for n in saved)
                   + " (`lossforge export NAME --format py`)")
    out += ["", "## Fitness per generation", "",
            f"Fitness is the {fitness_name(config.aggregate)}: above 0 beats it.", ""]
    if "fitness" in figures:
        out += [f"![fitness]({figures['fitness'].name})", ""]
    reasons = filter_reasons(generations)
    out += [_md_row(["generation", "best", "median", "candidates", *reasons, "failed"]),
            _md_row(["---"] * (5 + len(reasons)))]
    for g in generations:
        f = g.get("filters", {})
        out.append(_md_row([g["generation"], _fmt(g.get("best")), _fmt(g.get("median")), g.get("n_candidates", ""),
                            *[f.get(r, 0) for r in reasons], f.get("failed", 0)]))
    if "filters" in figures:
        out += ["", f"![filters]({figures['filters'].name})"]
    out += ["", "## Hall of fame", ""]
    if hof:
        out += [_md_row(["rank", "expression", "complexity", "fitness", *tasks, "generation", "origin"]),
                _md_row(["---"] * (6 + len(tasks)))]
        for r in hof[:10]:
            out.append(_md_row([r.get("rank", ""), f"`{r['expr']}`", r.get("complexity", ""), _fmt(r.get("fitness")),
                                *[_fmt(r.get(t)) for t in tasks], r.get("generation", ""), r.get("origin", "")]))
    else:
        out.append("No candidate was trained on the full budget.")
    out += ["", "## Pareto front (fitness against complexity)", ""]
    if "pareto" in figures:
        out += [f"![pareto]({figures['pareto'].name})", ""]
    if front:
        out += [_md_row(["complexity", "fitness", "expression"]), _md_row(["---"] * 3)]
        out += [_md_row([r.get("complexity", ""), _fmt(r.get("fitness")), f"`{r['expr']}`"]) for r in front]
    if "shapes" in figures:
        what = ("loss against p for a positive (y=1) and a negative (y=0) target" if space == "probability"
                else "loss against the residual r = p - y (at y = 0)")
        out += ["", "## Shapes of the top losses", "", f"The {what}; dotted: the baseline.", "",
                f"![shapes]({figures['shapes'].name})"]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- the report
@dataclass
class RunData:
    """Everything a report shows, read from a run directory and its store (read-only)."""

    run_dir: Path
    meta: dict
    config: SearchConfig
    row: dict
    generations: list[dict]
    candidates: list[dict]
    n_evaluations: int
    baselines: dict           # task -> (baseline loss, mean metric at the full budget)
    hof: list[dict]           # hall_of_fame.csv rows
    front: list[dict]         # pareto.csv rows
    confirmation: list[dict]  # confirmation.json verdicts ([] before or without confirmation)
    studies: list[dict]       # the run's Optuna studies: name, trials, best
    store_url: str
    space: str
    saved: list[str]

    @property
    def run_id(self) -> str:
        return self.meta["run_id"]

    @property
    def tasks(self) -> list[str]:
        from .taskref import run_tasks

        return [name for name, _ in run_tasks(self.meta, self.config.tasks)]


def _read_json_list(path: Path) -> list[dict]:
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return []  # being rewritten, or damaged: the report shows search fitness alone
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def _studies(url: str, run_id: str) -> list[dict]:
    """The Optuna studies this run keeps in its store (tuning and family searches).
    Read-only: a store without Optuna's tables is not given them (Optuna would create them)."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(url)
        try:
            if not sa.inspect(engine).has_table("studies"):
                return []
        finally:
            engine.dispose()
        import optuna

        summaries = optuna.get_all_study_summaries(storage=url)
    except Exception:  # noqa: BLE001 - no Optuna tables yet (no study): nothing to list
        return []
    out = []
    for s in summaries:
        if not s.study_name.startswith(run_id):
            continue
        best = s.best_trial.value if s.best_trial is not None else None
        out.append({"name": s.study_name, "trials": s.n_trials, "best": best})
    return out


def read_run(run_dir: str | Path) -> RunData:
    """Read what the report of ``run_dir`` shows (works on a running search too)."""
    from .runstore import run_store_url

    run_dir = Path(run_dir)
    from .taskref import run_tasks

    meta = _read_meta(run_dir)
    config = _read_config(run_dir)
    tasks = run_tasks(meta, config.tasks)  # (name, kind), from the run's records
    run_id = meta["run_id"]
    store = _open_store(run_dir, meta)
    try:
        row = store.run_row(run_id)
        if row is None:
            raise StorageError(f"run {run_id} is not in its run store {store.url_for_humans}; was runs.db replaced?")
        generations = store.generations(run_id)
        candidates = store.candidates(run_id)
        evaluations = store.evaluations(run_id)
    finally:
        store.close()
    baselines = {}
    for t, _ in tasks:
        rows = [e for e in evaluations if e["task"] == t and e["canonical"].startswith(BASELINE_PREFIX)
                and e["metric"] is not None and e.get("generation", -1) == -1]  # not confirmation's seeds
        if rows:
            top = max(e["steps"] for e in rows)
            vals = [e["metric"] for e in rows if e["steps"] == top]
            baselines[t] = (rows[0]["canonical"][len(BASELINE_PREFIX):], sum(vals) / len(vals))
    url = run_store_url(run_dir, meta.get("store"), config.store)
    return RunData(run_dir=run_dir, meta=meta, config=config, row=row, generations=generations,
                   candidates=candidates, n_evaluations=len(evaluations), baselines=baselines,
                   hof=_read_csv(run_dir / "hall_of_fame.csv"), front=_read_csv(run_dir / "pareto.csv"),
                   confirmation=_read_json_list(run_dir / "confirmation.json"), studies=_studies(url, run_id),
                   store_url=url, space=_space(tasks), saved=_saved_losses(run_id))


def report(run_dir: str | Path, out: str | Path | None = None, html: bool = True,
           refresh: float | None = None) -> Report:
    """Write the figures, ``report.md`` and (``html``) ``report.html`` of the run in
    ``run_dir`` to ``out`` (default RUN_DIR/report); ``refresh``: seconds after which
    the page reloads itself (for a running search)."""
    data = read_run(run_dir)
    out = Path(out) if out is not None else data.run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Path] = {}
    if data.generations:
        figures["fitness"] = fitness_plot(data.generations, out / "fitness.png", data.config.generations)
        figures["filters"] = filters_plot(data.generations, out / "filters.png")
    figures["pareto"] = pareto_plot(data.candidates, data.front, out / "pareto.png")
    if data.hof:
        figures["shapes"] = shapes_plot([r["expr"] for r in data.hof[:TOP_SHAPES]], data.space, out / "shapes.png")
    text = _markdown(data.run_dir, data.meta, data.config, data.row, data.generations, data.hof, data.front,
                     data.tasks, data.baselines, data.n_evaluations, figures, data.space, data.saved)
    md = out / "report.md"
    md.write_text(text, encoding="utf-8")
    page = None
    if html:
        from .html_report import write_html

        page = write_html(data, figures, out / "report.html", refresh=refresh)
    return Report(run_dir=data.run_dir, out=out, run_id=data.run_id, markdown=md, figures=list(figures.values()),
                  html=page)
