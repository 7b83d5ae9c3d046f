"""The HTML report of a run: one self-contained page, and a watcher that keeps it current.

:func:`write_html` renders ``templates/report.html.j2`` (Jinja2, autoescaped)
with the report's figures embedded as base64 PNG, so ``report.html`` is one
file that opens offline and can be mailed or attached: the hall of fame (with
the confirmation figures next to the search fitness once the run has
confirmed its best: ``confirmation.json``), fitness and filter counts per
generation, the Pareto front, the top losses' shapes, the run's Optuna studies
(with the ``optuna.load_study`` / ``optuna-dashboard`` lines that open them)
and the run's config.

:func:`watch` (``lossforge report RUN_DIR --watch``) rewrites the report each
time the running search writes a generation (it polls the run's checkpoint,
results and store status; it may be started before the search has created
the run directory) and stops when the run is no longer running, or
after ``idle_timeout`` seconds without a change (a run killed without a
chance to record it).  While the run is going, the page reloads itself every
``interval`` seconds, so a browser tab follows the search.
"""
from __future__ import annotations

import base64
import datetime as _dt
import math
import time
from pathlib import Path
from typing import Callable

from lossforge.primitives.files import atomic_write_text

from .fitness import fitness_name

TEMPLATES = Path(__file__).resolve().parent / "templates"
_FIGURES = (("fitness", "Fitness per generation"), ("filters", "What happened to the candidates"),
            ("pareto", "Pareto front"), ("shapes", "Shapes of the top losses"))


def _num(v, digits: int = 4, signed: bool = False) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    if not math.isfinite(f):
        return "-"
    return f"{f:+.{digits}f}" if signed else f"{f:.{digits}f}"


def _p(v) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return "-" if not math.isfinite(f) else ("<0.001" if f < 0.001 else f"{f:.3f}")


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _confirmation_cells(data, row: dict) -> dict | None:
    """The confirmation of one hall-of-fame row: from confirmation.json, else the CSV's columns."""
    verdict = next((v for v in data.confirmation if v.get("canonical") == row.get("canonical")), None)
    if verdict is not None:
        per = verdict.get("tasks", {}) or {}
        return {"confirmed": bool(verdict.get("confirmed")), "fitness": _num(verdict.get("fitness"), signed=True),
                "reason": verdict.get("reason", ""), "seeds": len(verdict.get("seeds", []) or []),
                "tasks": {t: {"mean": _num(r.get("mean")), "baseline": _num(r.get("baseline_mean")),
                              "p": _p(r.get("p_value"))} for t, r in per.items()}}
    if row.get("confirmed") in ("yes", "no"):
        return {"confirmed": row["confirmed"] == "yes", "fitness": _num(row.get("confirmed_fitness"), signed=True),
                "reason": "", "seeds": None,
                "tasks": {t: {"mean": _num(row.get(f"confirmed_{t}")), "baseline": "-", "p": _p(row.get(f"p_{t}"))}
                          for t in data.tasks}}
    return None


def context(data, figures: dict[str, Path], refresh: float | None = None) -> dict:
    """What the template shows (plain strings and lists: the template has no logic beyond loops)."""
    from .report import filter_reasons

    cfg = data.config
    status = (data.row or {}).get("status", "?")
    done = sum(1 for g in data.generations if g["generation"] < cfg.generations)
    reasons = filter_reasons(data.generations)
    hof = []
    for r in data.hof[:20]:
        hof.append({"rank": r.get("rank", ""), "expr": r["expr"], "complexity": r.get("complexity", ""),
                    "fitness": _num(r.get("fitness"), signed=True), "scores": [_num(r.get(t)) for t in data.tasks],
                    "generation": r.get("generation", ""), "origin": r.get("origin", ""),
                    "confirmation": _confirmation_cells(data, r)})
    generations = [{"generation": g["generation"] if g["generation"] < cfg.generations else
                    f"{g['generation']} (tuning)", "best": _num(g.get("best"), signed=True),
                    "median": _num(g.get("median"), signed=True), "candidates": g.get("n_candidates", ""),
                    "counts": [g.get("filters", {}).get(k, 0) for k in reasons],
                    "failed": g.get("filters", {}).get("failed", 0), "wall": _num(g.get("wall_time"), 1)}
                   for g in data.generations]
    try:
        config_text = (data.run_dir / "config.toml").read_text(encoding="utf-8")
    except OSError:
        config_text = cfg.to_toml()
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return {
        "run_id": data.run_id, "status": status, "refresh": max(1, round(refresh)) if refresh else None, "updated": now,
        "progress": f"{done} of {cfg.generations} generations", "running": status == "running",
        "fitness_name": fitness_name(cfg.aggregate),
        "summary": [("run directory", str(data.run_dir)), ("config", f"{cfg.name} (digest "
                                                             f"{data.meta.get('config_digest', '?')})"),
                    ("strategy", f"{cfg.strategy}: {cfg.generations} generations x {cfg.population} candidates"),
                    ("tasks", ", ".join(data.tasks)), ("steps", str(cfg.steps or "task default")),
                    ("split", cfg.split), ("evaluation seeds", ", ".join(map(str, data.meta.get("eval_seeds", [])))),
                    ("evaluations recorded", str(data.n_evaluations)), ("lossforge", data.meta.get("version", "?"))],
        "baselines": [(t, name, _num(v)) for t, (name, v) in data.baselines.items()],
        "saved": data.saved, "tasks": data.tasks, "hof": hof,
        "confirmed_any": any(h["confirmation"] for h in hof),
        "confirm_seeds": next((h["confirmation"]["seeds"] for h in hof if h["confirmation"]
                               and h["confirmation"]["seeds"]), None),
        "reasons": [k.replace("_", " ") for k in reasons], "generations": generations,
        "front": [{"complexity": r.get("complexity", ""), "fitness": _num(r.get("fitness"), signed=True),
                   "expr": r["expr"]} for r in data.front],
        "figures": [{"key": k, "title": title, "src": _data_uri(figures[k])} for k, title in _FIGURES if k in figures],
        "studies": data.studies, "store_url": data.store_url,
        "space": data.space, "config_toml": config_text,
    }


def write_html(data, figures: dict[str, Path], path: Path, refresh: float | None = None) -> Path:
    """Render the report page of ``data`` (a :class:`~lossforge.search.report.RunData`) to ``path``."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("report.html.j2").render(**context(data, figures, refresh))
    atomic_write_text(path, html)  # a browser reloading mid-write sees the old page or the new one
    return path


# ----------------------------------------------------------------------------- following a running search
def _stamp(run_dir: Path) -> tuple:
    """What changes when the search writes a generation (or tunes, confirms, finishes)."""
    out = []
    for name in ("checkpoint.json", "hall_of_fame.csv", "confirmation.json"):
        try:
            st = (run_dir / name).stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def _status(run_dir: Path) -> str:
    from .report import _open_store, _read_meta

    meta = _read_meta(run_dir)
    store = _open_store(run_dir, meta)
    try:
        row = store.run_row(meta["run_id"])
    finally:
        store.close()
    return (row or {}).get("status", "?")


def watch(run_dir: str | Path, out: str | Path | None = None, *, interval: float = 5.0,
          idle_timeout: float = 3600.0, on_update: Callable | None = None, sleep: Callable = time.sleep):
    """Rewrite the report of a running search after each generation until it stops.

    Returns ``(report, reason)``: the last :class:`~lossforge.search.report.Report`
    and why watching ended ("finished", "stopped", ... or "idle").  ``on_update``
    is called with each new report and the run's status.
    """
    from .errors import ConfigError
    from .report import report

    if not interval > 0 or not idle_timeout > 0:
        raise ConfigError(f"--interval ({interval}) and --idle-timeout ({idle_timeout}) must be positive seconds")
    run_dir = Path(run_dir)
    last, rep = None, None
    changed_at = time.monotonic()
    while not (run_dir / "run.json").exists() or not (run_dir / "config.toml").exists():
        if time.monotonic() - changed_at > idle_timeout:  # never started: the usual error names the directory
            break
        sleep(interval)  # started together with its search: the run directory appears in a moment
    while True:
        stamp, status = _stamp(run_dir), _status(run_dir)
        if (stamp, status) != last:
            running = status == "running"
            rep = report(run_dir, out, refresh=interval if running else None)
            last, changed_at = (stamp, status), time.monotonic()
            if on_update is not None:
                on_update(rep, status)
        if status != "running":
            return rep, status
        if time.monotonic() - changed_at > idle_timeout:
            return rep, "idle"
        sleep(interval)

