"""The ``lossforge`` command line.

Each subcommand parses its arguments here and calls the library function that
does the work; a :class:`LossforgeError` becomes one line on stderr and exit
status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys

from lossforge.primitives.version import lossforge_version


def _cmd_catalogue(args: argparse.Namespace) -> int:
    from lossforge.losses import catalogue_table

    print(catalogue_table(kind=args.kind, family=args.family, convention=args.convention))
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from lossforge.tasks import tasks_table

    print(tasks_table())
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from lossforge.search import SearchConfig, resume, run
    from lossforge.search.errors import ConfigError

    if args.resume:
        if args.config:
            raise ConfigError("give either CONFIG or --resume RUN_DIR, not both")
        result = resume(args.resume, quiet=args.quiet, workers=args.workers, address=args.address,
                        evaluator="local" if args.local else None)
    else:
        if not args.config:
            raise ConfigError("missing CONFIG (a TOML file such as experiments/quickstart.toml) or --resume RUN_DIR")
        config = SearchConfig.from_toml(args.config)
        changes = {k: v for k, v in (("workers", args.workers), ("address", args.address), ("seed", args.seed))
                   if v is not None}
        if args.local:
            changes["evaluator"] = "local"
        if changes:
            config = config.replace(**changes)
        result = run(config, run_dir=args.run_dir, quiet=args.quiet)
    _print_result(result)
    return 0


def _print_result(result) -> None:
    from lossforge.search.fitness import fitness_name

    print(f"run {result.run_id}: {result.evaluations} evaluations in {result.wall_time:.0f} s -> {result.run_dir}")
    base = ", ".join(f"{k} {v:.4f}" for k, v in result.baselines.items())
    print(f"baselines: {base}")
    print(f"hall of fame (fitness = {fitness_name(result.aggregate)}; > 0 beats it):")
    for i, e in enumerate(result.hall_of_fame[:10], 1):
        scores = "  ".join(f"{t}={v:.4f}" if v is not None else f"{t}=failed" for t, v in e.scores.items())
        print(f"{i:3d}. {e.fitness:+.4f}  c={e.complexity:<3d} {e.expr}    [{scores}]")
        if e.confirmation:  # search.confirm: re-trained on fresh seeds next to the baseline
            c = e.confirmation
            per = "  ".join(f"{t}={r['mean']:.4f} vs {r['baseline_mean']:.4f} p={r['p_value']:.3g}"
                            if r["mean"] is not None else f"{t}=failed" for t, r in c["tasks"].items())
            print(f"     {'confirmed' if c['confirmed'] else 'NOT confirmed'} on {len(c['seeds'])} fresh seeds: "
                  f"{c['fitness']:+.4f}  [{per}]")
    for name in result.saved:
        print(f"saved to the loss store as '{name}' (confirmed; lossforge export {name} --format py)")
    if not result.saved and any(e.confirmation for e in result.hall_of_fame):
        print("nothing saved: no hall-of-fame entry was confirmed against the baseline on fresh seeds")


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lossforge.losses import ExportError, export
    from lossforge.losses.lookup import loss_or_expr
    from lossforge.losses.store import use_store
    from lossforge.primitives import Expr

    with use_store(args.store):
        loss = loss_or_expr(args.loss)  # a name, else expression text (a typo: the parser's GrammarError)
        text = _export_expression(loss, args) if isinstance(loss, Expr) else \
            export(loss, format=args.format, task_kind=args.kind)
    if not args.output:
        sys.stdout.write(text)
        return 0
    path = Path(args.output)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None
    print(f"wrote {path} ({args.format})")
    return 0


def _export_expression(expr, args: argparse.Namespace) -> str:
    from lossforge.losses import ExportError, export_expression

    if args.kind is None:
        raise ExportError(f"exporting the expression {expr} needs --kind multiclass, binary or regression (the "
                          "module's convention: logits and class indices, logits and 0/1 targets, or predictions)")
    return export_expression(expr, kind=args.kind, format=args.format)


def _cmd_compare(args: argparse.Namespace) -> int:
    from lossforge.losses.lookup import split_losses
    from lossforge.losses.store import use_store

    from .compare import compare

    import torch

    progress = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    if args.threads:
        torch.set_num_threads(args.threads)  # small models: one thread each is fastest on a shared CPU
    losses = split_losses(args.losses or "") + list(args.loss or [])
    with use_store(args.store):
        result = compare(args.tasks, losses, seeds=args.seeds, split=args.split, steps=args.steps,
                         out=args.out, device=args.device, on_progress=progress)
    print(result.table())
    if args.out:
        print(f"\nwrote compare.md, compare.csv, compare_summary.csv and the plots to {args.out}")
    return 0


def _cmd_store(args: argparse.Namespace) -> int:
    from lossforge.losses import StoreError
    from lossforge.losses import store

    directory = store.store_directory(args.store)
    if args.action == "add":
        name = store.add(args.expr, kind=args.kind, name=args.name, description=args.description,
                         directory=directory)
        print(f"stored '{name}' in {directory / (name + '.toml')}; use it by name: lossforge compare --losses "
              f"{name} ..., lossforge export {name}")
        return 0
    if args.action == "remove":
        print(f"removed {store.remove(args.name, directory)}")
        return 0
    if args.action != "list":
        raise StoreError("give an action: lossforge store add EXPR --kind KIND [--name NAME], store list, "
                         "store remove NAME")
    entries = store.stored(directory)
    if not entries:
        print(f"the loss store {directory} holds no losses (lossforge store add EXPR --kind KIND --name NAME)")
        return 0
    print(f"loss store {directory}:")
    width = max(len(p.stem) for p, _ in entries)
    for path, loss in entries:
        if isinstance(loss, StoreError):
            print(f"  {path.stem.ljust(width)}  INVALID (skipped): {str(loss).removeprefix(f'{path}: ')}")
        else:
            print(f"  {loss.name.ljust(width)}  {loss.task_kinds[0]:<10}  c={loss.expr.complexity:<3d} {loss.expr}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import report

    if args.watch:
        from .html_report import watch

        def updated(rep, status) -> None:
            print(f"{rep.html}: rewritten (run {status})", flush=True)

        rep, why = watch(args.run_dir, out=args.out, interval=args.interval, idle_timeout=args.idle_timeout,
                         on_update=updated)
        print(f"stopped watching: the run is {why}" if why != "idle" else
              f"stopped watching: no new generation for {args.idle_timeout:g} s (the run may have been killed)")
        return 0
    result = report(args.run_dir, out=args.out)
    print(f"report of run {result.run_id}: {result.markdown}")
    for path in result.figures:
        print(f"  {path}")
    print(f"  {result.html}  (one self-contained page: open it in a browser)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossforge",
        description="Search for loss functions: a symbolic grammar explored by genetic programming and Optuna, "
                    "scored by training real models on several tasks, in parallel on Ray workers.",
    )
    parser.add_argument("--version", action="version", version=f"lossforge {lossforge_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("search", help="run a loss search from a TOML config (or resume one)")
    p.add_argument("config", nargs="?", help="search config (TOML), e.g. experiments/quickstart.toml")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray instance)")
    p.add_argument("--workers", type=int, help="parallel evaluations (local Ray instance: CPUs to use)")
    p.add_argument("--local", action="store_true", help="evaluate in this process instead of on Ray workers")
    p.add_argument("--run-dir", help="where to write the run (default: runs/NAME-TIMESTAMP)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument("--quiet", action="store_true", help="no progress bar: one line per generation")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("catalogue", help="list the reference and discovered losses")
    p.add_argument("--kind", choices=["reference", "discovered"], default=None, help="only this kind")
    p.add_argument("--family", default=None, help="only this family (e.g. regression, segmentation, boxes, metric)")
    p.add_argument("--convention", default=None,
                   help="only this input convention: 'p, y', boxes, embeddings, images or generative")
    p.set_defaults(func=_cmd_catalogue)

    p = sub.add_parser("tasks", help="list the built-in training tasks and their budgets")
    p.set_defaults(func=_cmd_tasks)

    p = sub.add_parser("export", help="export a loss (a name or an expression) as PyTorch code, JSON, LaTeX or sympy")
    p.add_argument("loss", metavar="NAME_OR_EXPR",
                   help="a loss name (see `lossforge catalogue`) or an expression in p and y, e.g. '(p - y)**2'")
    p.add_argument("--format", default="py", help="py (standalone torch module), json, latex or sympy (default: py)")
    p.add_argument("--kind", choices=["multiclass", "binary", "regression"],
                   help="the module's convention (needed for an expression; a name has its own)")
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    p.add_argument("--store", help="the user loss store (default: $LOSSFORGE_STORE, else ~/.lossforge/losses)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("compare", help="compare losses on tasks over seeds, on held-out data, with statistics")
    p.add_argument("--tasks", required=True, help="comma-separated task names, e.g. digits,breast_cancer")
    p.add_argument("--losses", help="comma-separated loss names or expressions, e.g. cross_entropy,focal,lf_1a2b3c4d")
    p.add_argument("--loss", action="append", metavar="NAME_OR_EXPR",
                   help="one more loss, a name or an expression such as '-y*log(p)*(1 - p)' (repeatable)")
    p.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 per task and loss (default: 10)")
    p.add_argument("--steps", type=int, help="training steps per model (default: each task's budget)")
    p.add_argument("--split", default="test", help="split to score on: test (default), val or train")
    p.add_argument("--out", help="write compare.md, compare.csv, compare_summary.csv and PNG plots here")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--store", help="the user loss store (default: $LOSSFORGE_STORE, else ~/.lossforge/losses)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the models are small; 0 keeps torch's default)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("store", help="keep your own loss expressions in the user store: add, list, remove")
    p.set_defaults(func=_cmd_store, action=None, store=None)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    a = actions.add_parser("add", help="store an expression under a name (a readable file, never executed)")
    a.add_argument("expr", metavar="EXPR", help="the loss in p and y, e.g. '-y*(1 - p)**2*log(p)'")
    a.add_argument("--kind", required=True, choices=["multiclass", "binary", "regression"],
                   help="the module convention: multiclass/binary (p = probabilities) or regression")
    a.add_argument("--name", help="its name (lower-case letters, digits, _; default: lf_ + a hash)")
    a.add_argument("--description", help="a line saying what it is")
    a = actions.add_parser("list", help="the losses in the user store")
    a = actions.add_parser("remove", help="delete a stored loss from the user store")
    a.add_argument("name", metavar="NAME")
    for a in actions.choices.values():
        a.add_argument("--store", help="the user loss store (default: $LOSSFORGE_STORE, else ~/.lossforge/losses)")

    p = sub.add_parser("report", help="figures, a Markdown summary and an HTML page of a search run")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory a search wrote")
    p.add_argument("--out", help="where to write the report (default: RUN_DIR/report)")
    p.add_argument("--watch", action="store_true",
                   help="rewrite report.html after every generation of a running search, until it stops")
    p.add_argument("--interval", type=float, default=5.0, help="--watch: seconds between looks (default: 5)")
    p.add_argument("--idle-timeout", type=float, default=3600.0,
                   help="--watch: stop after this many seconds without a new generation (default: 3600)")
    p.set_defaults(func=_cmd_report)
    return parser


def _expressions_as_values(argv: list[str]) -> list[str]:
    """Let an expression that starts with '-' (``-y*log(p)``) be a value, not an unknown option:
    argparse reads a token that starts with a space as a value (the parser ignores the space)."""
    def expression(token: str) -> bool:
        head = token.split("=", 1)[0]
        return token.startswith("-") and any(not (ch.isalnum() or ch in "_-") for ch in head)

    return [" " + t if expression(t) else t for t in argv]


def main(argv: list[str] | None = None) -> int:
    from lossforge.primitives import LossforgeError

    parser = build_parser()
    args = parser.parse_args(_expressions_as_values(sys.argv[1:] if argv is None else list(argv)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except LossforgeError as exc:
        print(f"lossforge: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_status", 2))  # 3: stopped by infrastructure faults, resumable
    except KeyboardInterrupt:
        print("lossforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
