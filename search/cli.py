"""The ``lossforge`` command line.

Each subcommand parses its arguments here and calls the library function that
does the work; a :class:`LossforgeError` becomes one line on stderr and exit
status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from importlib import metadata


def _version() -> str:
    try:
        return metadata.version("lossforge")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def _cmd_catalogue(args: argparse.Namespace) -> int:
    from lossforge.losses import catalogue_table

    print(catalogue_table(kind=args.kind, family=args.family))
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from lossforge.tasks import tasks_table

    print(tasks_table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossforge",
        description="Search for loss functions: a symbolic grammar explored by genetic programming and Optuna, "
                    "scored by training real models on several tasks, in parallel on Ray workers.",
    )
    parser.add_argument("--version", action="version", version=f"lossforge {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("catalogue", help="list the reference and discovered losses")
    p.add_argument("--kind", choices=["reference", "discovered"], default=None, help="only this kind")
    p.add_argument("--family", default=None, help="only this family (e.g. regression, segmentation)")
    p.set_defaults(func=_cmd_catalogue)

    p = sub.add_parser("tasks", help="list the built-in training tasks and their budgets")
    p.set_defaults(func=_cmd_tasks)
    return parser


def main(argv: list[str] | None = None) -> int:
    from lossforge.primitives import LossforgeError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except LossforgeError as exc:
        print(f"lossforge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lossforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
