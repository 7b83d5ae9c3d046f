"""Renderings of a :class:`~lossforge.search.compare.Comparison`: a terminal
table, Markdown, raw and summary CSV, and one bar chart per task (PNG)."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from lossforge.losses.plotting import file_stem, save_png

RAW_COLUMNS = ("task", "loss", "seed", "split", "steps", "metric_name", "metric", "status", "error", "train_time")
SUMMARY_COLUMNS = ("task", "loss", "metric", "direction", "applicable", "baseline", "added", "n_seeds", "n_ok",
                   "n_diverged", "n_error", "mean", "sd", "ci_low", "ci_high", "rank", "n_pairs", "delta",
                   "p_ttest", "p_wilcoxon", "delta_ci_low", "delta_ci_high")


def _num(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:.4f}" if abs(v) < 1000 else f"{v:.4g}"


def _p(v: float) -> str:
    if not math.isfinite(v):
        return "-"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def _ci(c) -> str:
    return f"[{_num(c.ci_low)}, {_num(c.ci_high)}]" if math.isfinite(c.ci_low) else "-"


def _delta(c) -> str:
    if not math.isfinite(c.delta):
        return "-"
    ci = f" [{c.delta_low:+.4f}, {c.delta_high:+.4f}]" if math.isfinite(c.delta_low) else ""
    return f"{c.delta:+.4f}{ci}"


def _seeds_text(seeds: list[int]) -> str:
    if seeds == list(range(len(seeds))):
        return f"seeds 0..{len(seeds) - 1}" if len(seeds) > 1 else "seed 0"
    return "seeds " + ", ".join(map(str, seeds))


def _direction(direction: str) -> str:
    return "higher is better" if direction == "max" else "lower is better"


def _rank(c) -> str:
    return "-" if c.rank is None else f"{c.rank:g}"


def _name(c) -> str:
    return c.loss + (" (baseline)" if c.is_baseline else "")


def _cells_by_rank(cmp, task: str) -> list:
    cells = cmp.task_cells(task)
    return sorted(cells, key=lambda c: (not c.applicable, c.rank is None, c.rank or 0.0))


def _failed(c) -> str:
    if not c.n_failed:
        return "0"
    parts = [f"{c.n_diverged} diverged" if c.n_diverged else "", f"{c.n_error} error" if c.n_error else ""]
    return ", ".join(p for p in parts if p)


def _heading(cmp, task: str) -> str:
    c = cmp.task_cells(task)[0]
    return (f"{task}: {c.metric} ({_direction(c.direction)}) on the {cmp.split} split, {_seeds_text(cmp.seeds)}, "
            f"{cmp.steps[task]} steps; baseline {cmp.baselines[task]}")


# ----------------------------------------------------------------------------- terminal
def terminal_table(cmp) -> str:
    header = ("rank", "loss", "mean", "sd", "95% CI", "ok", "failed", "delta", "p t-test", "p Wilcoxon")
    blocks = []
    for task in cmp.tasks:
        rows = []
        for c in _cells_by_rank(cmp, task):
            if not c.applicable:
                rows.append(("", c.loss, "n/a", "", "", "", "", "", "", ""))
                continue
            base = c.is_baseline
            rows.append((_rank(c), _name(c), _num(c.mean), _num(c.sd), _ci(c), f"{c.n_ok}/{c.n_seeds}", _failed(c),
                         "-" if base else _num(c.delta), "-" if base else _p(c.p_ttest),
                         "-" if base else _p(c.p_wilcoxon)))
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
        lines = [_heading(cmp, task), "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        blocks.append("\n".join(lines))
    notes = ("delta = mean paired difference to the baseline; p = paired t-test and Wilcoxon signed-rank "
             "against the baseline over the seeds where both trained; n/a = the loss does not train this kind of task")
    return "\n\n".join(blocks) + "\n\n" + notes


# ----------------------------------------------------------------------------- Markdown
def _md_row(values) -> str:
    return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"


def markdown(cmp, images: dict[str, str] | None = None) -> str:
    images = images or {}
    out = ["# Loss comparison", "",
           f"Every loss trained on every task with {_seeds_text(cmp.seeds)} and scored on the held-out "
           f"**{cmp.split}** split. Cells: mean ± standard deviation over the seeds that trained, the 95% "
           "Student-t interval, the rank within the task (1 = best), and paired tests against the task's "
           "baseline over the seeds where both trained (paired t-test and Wilcoxon signed-rank; p-values). "
           "*n/a*: the loss does not train that kind of task.", "",
           "## Overview", ""]
    labels = list(cmp.losses) + sorted({c.loss for c in cmp.cells.values() if c.added} - set(cmp.losses))
    heads = [f"{t} ({cmp.task_cells(t)[0].metric}, {'↑' if cmp.task_cells(t)[0].direction == 'max' else '↓'})"
             for t in cmp.tasks]
    out += [_md_row(["loss", *heads]), _md_row(["---"] * (len(heads) + 1))]
    for label in labels:
        row = [label]
        for t in cmp.tasks:
            c = cmp.cells.get((t, label))
            if c is None:
                row.append("")
            elif not c.applicable:
                row.append("n/a")
            elif not c.n_ok:
                row.append(f"failed ({c.n_failed}/{c.n_seeds})")
            else:
                sd = f" ± {_num(c.sd)}" if math.isfinite(c.sd) else ""
                row.append(f"{_num(c.mean)}{sd} (#{_rank(c)})")
        out.append(_md_row(row))
    for task in cmp.tasks:
        out += ["", f"## {task}", "", _heading(cmp, task) + ".", ""]
        out.append(_md_row(["rank", "loss", "mean", "sd", "95% CI", "ok", "failed", "Δ vs baseline [95% CI]",
                            "p (t-test)", "p (Wilcoxon)"]))
        out.append(_md_row(["---"] * 10))
        errors = []
        for c in _cells_by_rank(cmp, task):
            if not c.applicable:
                out.append(_md_row(["", c.loss, "n/a", "", "", "", "", "", "", ""]))
                continue
            base = c.is_baseline
            out.append(_md_row([_rank(c), f"**{c.loss}** (baseline)" if base else c.loss, _num(c.mean), _num(c.sd),
                                _ci(c), f"{c.n_ok}/{c.n_seeds}", _failed(c), "" if base else _delta(c),
                                "" if base else _p(c.p_ttest), "" if base else _p(c.p_wilcoxon)]))
            errors += [f"- {c.loss}: {e}" for e in c.errors]
        if task in images:
            out += ["", f"![{task}]({images[task]})"]
        if errors:
            out += ["", "Failures:", "", *errors]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- CSV
def _csv_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


def raw_csv(cmp) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(RAW_COLUMNS)
    for r in cmp.rows:
        w.writerow([_csv_value(r[k]) for k in RAW_COLUMNS])
    return buf.getvalue()


def summary_csv(cmp) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SUMMARY_COLUMNS)
    for c in cmp.cells.values():
        w.writerow([_csv_value(v) for v in (
            c.task, c.loss, c.metric, c.direction, c.applicable, c.is_baseline, c.added, c.n_seeds, c.n_ok,
            c.n_diverged, c.n_error, c.mean, c.sd, c.ci_low, c.ci_high, c.rank, c.n_pairs, c.delta, c.p_ttest,
            c.p_wilcoxon, c.delta_low, c.delta_high)])
    return buf.getvalue()


# ----------------------------------------------------------------------------- plots and files
def task_plot(cmp, task: str, path: Path) -> Path | None:
    """Two panels per task, losses best first: left, the paired difference from the
    baseline with its 95% interval (a forest plot with a zero line); right, each
    loss's mean metric with its 95% interval.  None when no loss trained."""
    from .charts import fit_labels, figure_with_notes, wrap

    cells = [c for c in _cells_by_rank(cmp, task) if c.applicable and c.n_ok]
    if not cells:
        return None
    failed = [c.loss for c in _cells_by_rank(cmp, task) if c.applicable and not c.n_ok]
    labels, notes = fit_labels([c.loss + (" (baseline)" if c.is_baseline else "") for c in cells])
    if failed:
        notes.append("not shown (failed on every seed): " + ", ".join(failed))
    metric, direction, baseline = cells[0].metric, cells[0].direction, cmp.baselines[task]
    rows = max(len(cells), 2)
    fig, (left, right) = figure_with_notes(10.0, 1.6 + 0.42 * rows, cols=2, notes=notes, sharey=True)
    ys = list(range(len(cells)))[::-1]
    better = 1.0 if direction == "max" else -1.0
    for y, c in zip(ys, cells):
        if c.is_baseline:
            left.plot([0.0], [y], "D", color="tab:gray")
            continue
        if not math.isfinite(c.delta):
            continue
        lo, hi = c.delta_low, c.delta_high
        sure = math.isfinite(lo) and (lo > 0 or hi < 0)
        colour = ("tab:green" if c.delta * better > 0 else "tab:red") if sure else "tab:blue"
        err = [[c.delta - lo], [hi - c.delta]] if math.isfinite(lo) else None
        left.errorbar([c.delta], [y], xerr=err, fmt="o", color=colour, capsize=4)
    left.axvline(0.0, color="black", lw=1.0)
    left.set_yticks(ys, labels)
    left.set_xlabel("\n".join(wrap(f"{metric}: loss - {baseline} (paired by seed), mean and 95% CI; "
                                    f"{'> 0' if direction == 'max' else '< 0'} is better", 44)))
    left.set_title("difference from the baseline")
    for y, c in zip(ys, cells):
        err = [[c.mean - c.ci_low], [c.ci_high - c.mean]] if math.isfinite(c.ci_low) else None
        right.errorbar([c.mean], [y], xerr=err, fmt="D" if c.is_baseline else "o",
                       color="tab:gray" if c.is_baseline else "black", capsize=4)
    base = next((c for c in cells if c.is_baseline), None)
    if base is not None and math.isfinite(base.ci_low):
        right.axvspan(base.ci_low, base.ci_high, color="tab:gray", alpha=0.15, lw=0)
    right.set_xlabel("\n".join(wrap(f"{metric} ({_direction(direction)}), mean and 95% CI; "
                                     "shaded: the baseline's interval", 44)))
    right.set_title("absolute score")
    right.tick_params(axis="y", labelleft=False)
    from matplotlib.ticker import MaxNLocator

    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.grid(axis="x", alpha=0.3)
        ax.set_ylim(-0.7, len(cells) - 0.3)
    fig.suptitle(f"{task}: {cmp.split} split, {_seeds_text(cmp.seeds)}, {cmp.steps[task]} steps; "
                 f"green / red: the 95% CI of the difference excludes 0")
    return save_png(fig, path)


def write(cmp, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    images: dict[str, str] = {}
    for task in cmp.tasks:
        png = task_plot(cmp, task, out / f"compare_{file_stem(task)}.png")
        if png is not None:
            images[task] = png.name
            written.append(png)
    for name, text in (("compare.md", markdown(cmp, images)), ("compare.csv", raw_csv(cmp)),
                       ("compare_summary.csv", summary_csv(cmp))):
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
