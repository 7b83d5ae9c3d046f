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
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from lossforge.losses.plotting import figure, save_png

from .config import SearchConfig
from .errors import StorageError
from .runstore import RunStore

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

    @property
    def files(self) -> list[Path]:
        return [*self.figures, self.markdown]


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
    url = meta.get("store") or f"sqlite:///{(run_dir / 'runs.db').resolve()}"
    if url.startswith("sqlite"):
        db = sa.engine.make_url(url).database
        if db and db != ":memory:" and not Path(db).exists():
            local = run_dir / "runs.db"
            if local.exists():  # the run directory was moved: its store moved with it
                url = f"sqlite:///{local.resolve()}"
            else:
                raise StorageError(f"the run store {db} of {run_dir} does not exist; the report needs it")
    return RunStore(url)


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


def _space(config: SearchConfig) -> str:
    from lossforge.tasks import get as get_task

    kind = get_task(config.tasks[0]).kind
    return "real" if kind == "regression" else "probability"


# ----------------------------------------------------------------------------- figures
def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def fitness_plot(generations: list[dict], path: Path) -> Path:
    fig, ax = figure(7.0, 4.0)
    gens = [g["generation"] for g in generations]
    for key, style in (("best", "o-"), ("median", "s--")):
        values = [_float(g.get(key)) for g in generations]
        ax.plot(gens, values, style, label=key)
    ax.axhline(0.0, color="gray", lw=0.8, ls=":", label="baseline level")
    _integer_ticks(ax)
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness (mean log error ratio vs baseline)")
    ax.set_title("fitness per generation")
    ax.legend()
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
    fig, ax = figure(7.0, 4.0)
    gens = [g["generation"] for g in generations]
    bottom = [0.0] * len(gens)
    for reason in filter_reasons(generations):
        counts = [float(g.get("filters", {}).get(reason, 0) or 0) for g in generations]
        if not any(counts):
            continue
        ax.bar(gens, counts, bottom=bottom, label="trained" if reason == "evaluated" else reason)
        bottom = [b + c for b, c in zip(bottom, counts)]
    _integer_ticks(ax)
    ax.set_xlabel("generation")
    ax.set_ylabel("candidates")
    ax.set_title("candidates per generation: rejected by filter, or trained")
    ax.legend(fontsize="small")
    return save_png(fig, path)


def pareto_plot(candidates: list[dict], front: list[dict], path: Path) -> Path:
    fig, ax = figure(7.0, 4.5)
    pts = [(c["complexity"], c["fitness"]) for c in candidates
           if c.get("fidelity") == 2 and c.get("complexity") is not None and math.isfinite(_float(c.get("fitness")))]
    if pts:
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=12, color="lightgray", label="trained candidates")
    fx = [_float(r["complexity"]) for r in front]
    fy = [_float(r["fitness"]) for r in front]
    if front:
        ax.step(fx, fy, "o-", where="post", color="tab:red", label="Pareto front")
        for x, y, r in zip(fx, fy, front):
            text = r["expr"] if len(r["expr"]) <= 28 else r["expr"][:25] + "..."
            ax.annotate(text, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0.0, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("complexity")
    ax.set_ylabel("fitness")
    ax.set_title("fitness against complexity")
    if pts or front:
        ax.legend(fontsize="small")
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
    panels = ["y=1", "y=0"] if space == "probability" else ["y=0"]
    fig, axes = figure(5.0 * len(panels), 4.0, 1, len(panels))
    axes = list(axes) if len(panels) > 1 else [axes]
    baseline = _BASELINE_EXPR[space]
    for ax, panel in zip(axes, panels):
        seen: list[float] = []
        for i, text in enumerate([*exprs, baseline]):
            try:
                x, curves = loss_curves(text, space)
            except Exception:  # noqa: BLE001 - one unplottable expression must not stop the report
                continue
            is_base = i == len(exprs)
            label = ("baseline: " if is_base else f"#{i + 1}: ") + (text if len(text) <= 40 else text[:37] + "...")
            ax.plot(x, curves[panel], "k:" if is_base else "-", label=label)
            seen += curves[panel]
        limits = _robust_limits(seen)
        if limits:
            ax.set_ylim(*limits)
        ax.set_xlabel("p" if space == "probability" else "residual r = p - y")
        ax.set_ylabel("L")
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
            "Fitness is the mean log error ratio against the baseline over the tasks: above 0 beats it.", ""]
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
def report(run_dir: str | Path, out: str | Path | None = None) -> Report:
    """Write the figures and ``report.md`` of the run in ``run_dir`` to ``out`` (default RUN_DIR/report)."""
    run_dir = Path(run_dir)
    meta = _read_meta(run_dir)
    config = SearchConfig.from_toml(run_dir / "config.toml")
    out = Path(out) if out is not None else run_dir / "report"
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
    tasks = list(config.tasks)
    baselines = {}
    for t in tasks:
        rows = [e for e in evaluations if e["task"] == t and e["canonical"].startswith(BASELINE_PREFIX)
                and e["metric"] is not None]
        if rows:
            top = max(e["steps"] for e in rows)
            vals = [e["metric"] for e in rows if e["steps"] == top]
            baselines[t] = (rows[0]["canonical"][len(BASELINE_PREFIX):], sum(vals) / len(vals))
    hof = _read_csv(run_dir / "hall_of_fame.csv")
    front = _read_csv(run_dir / "pareto.csv")
    space = _space(config)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Path] = {}
    if generations:
        figures["fitness"] = fitness_plot(generations, out / "fitness.png")
        figures["filters"] = filters_plot(generations, out / "filters.png")
    figures["pareto"] = pareto_plot(candidates, front, out / "pareto.png")
    if hof:
        figures["shapes"] = shapes_plot([r["expr"] for r in hof[:TOP_SHAPES]], space, out / "shapes.png")
    text = _markdown(run_dir, meta, config, row, generations, hof, front, tasks, baselines, len(evaluations),
                     figures, space, _saved_losses(run_id))
    md = out / "report.md"
    md.write_text(text, encoding="utf-8")
    return Report(run_dir=run_dir, out=out, run_id=run_id, markdown=md, figures=list(figures.values()))
