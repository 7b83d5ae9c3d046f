"""Mutation testing of lossforge's core modules with mutmut, one module at a time.

Not part of the test suite or CI: a quality check run by hand (``pip install -e .[mutation]``)::

    nice -n 19 python experiments/mutation.py                  # every module below, in turn
    nice -n 19 python experiments/mutation.py parse filters    # some of them
    python experiments/mutation.py --list                      # the modules and their tests

Workflow used for the scores in ``experiments/mutation_equivalents.md`` (one module at a time)::

    nice -n 19 python experiments/mutation.py filters --workdir /tmp/lfmut --tests-from bcfbf1c  # before
    nice -n 19 python experiments/mutation.py filters --workdir /tmp/lfmut --again               # after
    python experiments/mutation.py filters --workdir /tmp/lfmut --report --show                  # survivors

``--tests-from REV`` runs the tests of an older revision against today's sources; ``--again``
re-tests, with the current tests, only the mutants that survived the last run in that
workdir (a killed mutant stays killed: tests are only ever added), except those listed as
equivalent.

It prints, per module, mutmut's counts and the score: killed / (mutants - equivalent), where
"killed" includes timeouts (a mutant that hangs the tests is caught) and the equivalent
mutants are those listed, with a reason each, in ``experiments/mutation_equivalents.md``.
Surviving mutants not listed there are printed with ``mutmut show``'s diff, to be killed by
a new test or, if they change nothing a caller can observe, added to that list.

How it maps the layout.  The package is a namespace package whose parts live in top-level
folders (``primitives/`` -> ``lossforge.primitives`` through setuptools ``package-dir``), and
mutmut names each mutant after the module path of its file and activates it only when the
running function's ``__module__`` matches.  So each module is mutated in a staging copy
(``--workdir``, default a temporary folder) laid out as ``lossforge/primitives/...``: mutmut
writes its mutants to ``mutants/lossforge/...`` and puts ``mutants/`` first on ``sys.path``,
where Python's path finder resolves ``lossforge.*`` before the editable install's finder.
mutmut's own forced-failure check (every run makes one test fail through the trampolines
and stops if none does) confirms the tests import the mutated files.  The real working
tree is never modified.

Each module runs only its own test selection (``MODULES`` below, the smallest set that
exercises it), single-threaded torch, ``--jobs`` mutants at once (mutmut's ``--max-children``,
default 2: one per core of this machine) and a time limit (``--timeout``, default 900 s per
module).  mutmut runs, per mutant, only the selected tests that call the mutated function,
with ``-x``; the staged conftest sorts them fastest first (``FASTEST_FIRST``), so a killed
mutant costs its quickest failing test.  The whole list mutates canonical.py once (its halves,
``PARTS``, run by name only) and loss.py with its targeted tests alone.

The whole list (``nice -n 19 python experiments/mutation.py``, fresh workdir), measured once
on the shared 2-core machine (7 December 2026; other agents' work kept the 1-minute load
average at 1.6-6.1, 3.9 on average): 42 min 12 s for 5199 mutants of 15 modules, trainer.py
the longest (745 s); the per-module table is in ``mutation_equivalents.md``.  Before these
changes (one worker, canonical.py mutated three times, loss.py with its catalogue-wide tests)
the list took well over an hour: 6 min for the rest of canonical.py, 9.5 for table.py, 11 for
checkpoint.py, 22 for runstore.py, more than 15 for compile.py.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("primitives", "losses", "tasks", "search")
EQUIVALENTS = Path(__file__).resolve().parent / "mutation_equivalents.md"

# name -> (source file, tests that exercise it).  Keep the selections small: every
# mutant of a function re-runs the selected tests that call that function.
MODULES: dict[str, tuple[str, list[str]]] = {
    "parse": ("primitives/parse.py", [
        "tests/primitives/test_parse.py", "tests/primitives/test_mutants_parse.py",
        "tests/primitives/test_fuzz.py"]),
    "fingerprint": ("primitives/fingerprint.py", [
        "tests/primitives/test_fingerprint.py", "tests/primitives/test_mutants_fingerprint.py"]),
    # The whole file, with the tests of both halves below (the whole-list run uses this one).
    "canonical": ("primitives/canonical.py", [
        "tests/primitives/test_expr.py", "tests/primitives/test_mutants_canonical.py",
        "tests/primitives/test_canonical_structure.py"]),
    # Two halves of canonical.py, as they were measured and reviewed (not in the whole-list run).
    "canonical_numbers": ("primitives/canonical.py", [
        "tests/primitives/test_mutants_canonical.py", "tests/primitives/test_expr.py"]),
    "canonical_rest": ("primitives/canonical.py", [
        "tests/primitives/test_expr.py", "tests/primitives/test_mutants_canonical.py",
        "tests/primitives/test_canonical_structure.py"]),
    "table": ("primitives/table.py", [
        "tests/primitives/test_table.py",
        "tests/primitives/test_user_primitive.py::test_the_row_carries_everything_export_needs",
        "tests/primitives/test_user_primitive.py::test_a_lambda_torch_form_needs_an_export_form",
        "tests/primitives/test_user_primitive.py::"
        "test_a_built_in_redefined_with_a_new_torch_form_drops_the_old_rule_and_export",
        "tests/primitives/test_table_mutants.py"]),
    "compile": ("primitives/compile.py", [
        "tests/primitives/test_expr.py",
        "tests/primitives/test_bit_identical.py::test_population_program_values_and_derivatives",
        "tests/primitives/test_compile_mutants.py"]),
    # test_mutants_loss.py alone kills every non-equivalent mutant; the catalogue-wide tests
    # (test_expressions.py, test_registry.py: 600 tests, ~30 s a run) add nothing but time.
    "loss": ("losses/loss.py", ["tests/losses/test_mutants_loss.py"]),
    "segmentation": ("losses/segmentation.py", [
        "tests/losses/test_segmentation.py", "tests/losses/test_mutants_segmentation.py"]),
    "metrics": ("tasks/metrics.py", [
        "tests/tasks/test_metrics.py", "tests/tasks/test_metrics_mutants.py"]),
    "program": ("tasks/program.py", [
        "tests/tasks/test_program.py", "tests/tasks/test_program_mutants.py",
        "tests/primitives/test_bit_identical.py::test_population_program_values_and_derivatives"]),
    # Fast training tests only (the whole of test_evaluate.py takes minutes a mutant).
    "trainer": ("tasks/trainer.py", [f"tests/tasks/test_evaluate.py::{t}" for t in (
        "test_population_of_one_equals_a_plain_pytorch_loop", "test_a_diverging_loss_is_isolated",
        "test_errors_are_isolated_and_explained", "test_time_limit_marks_unfinished_losses_as_errors",
        "test_evaluate_argument_errors", "test_device_argument_is_honoured")]
        + ["tests/tasks/test_trainer_mutants.py", "tests/tasks/test_trainer_loop_mutants.py"]),
    "filters": ("search/filters.py", [
        "tests/search/test_filters_fitness.py", "tests/search/test_mutants_filters.py"]),
    "checkpoint": ("search/checkpoint.py", [
        "tests/search/test_storage.py::test_checkpoints_are_atomic_checksummed_and_keep_the_previous_one",
        "tests/search/test_storage.py::test_a_checkpoint_write_that_fails_keeps_the_old_one_and_leaves_no_"
        "temporary_file",
        "tests/search/test_checkpoint_mutants.py"]),
    # The SQLite cases only (the PostgreSQL ones start a server per mutant) and none of
    # the multi-process searches (about a minute each).
    "runstore": ("search/runstore.py", [f"tests/search/test_storage.py::{t}" for t in (
        "test_evaluations_round_trip_and_are_never_duplicated[sqlite]",
        "test_a_run_reopened_with_another_config_is_refused[sqlite]",
        "test_an_infrastructure_fault_is_recorded_never_cached_and_replaced_by_the_result[sqlite]",
        "test_generations_and_candidates_are_recorded_idempotently[sqlite]",
        "test_the_schema_version_is_recorded_and_a_newer_store_is_refused[sqlite]",
        "test_an_unknown_database_kind_or_missing_driver_is_one_clear_error",
        "test_a_file_that_is_not_a_database_gives_a_clear_error_and_is_left_alone",
        "test_a_truncated_database_gives_a_clear_error",
        "test_a_store_written_before_schema_versions_is_read_as_version_1")]
        + ["tests/search/test_runstore_mutants.py"]),
    "halloffame": ("search/halloffame.py", [
        "tests/search/test_filters_fitness.py::test_pareto_front_and_hall_of_fame",
        "tests/search/test_mutants_halloffame.py"]),
    "seeds": ("search/engine.py", ["tests/search/test_mutants_seeds.py"]),
}
# Subsets of a module run in its stead: not part of the whole-list run (``python experiments/mutation.py``).
PARTS = ("canonical_numbers", "canonical_rest")

# Only these functions (or classes: all their methods) of a module are mutated (mutmut's
# do_not_mutate works per file, so the other functions' mutants are dropped from the count instead).
ONLY_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "seeds": ("derive_seeds",),
    "canonical_numbers": ("round_number", "normalise_numbers", "numeric_value", "fold_numeric"),
    "canonical_rest": ("validate", "_expanded_terms", "_largest_expansion", "canonical_form", "to_text",
                       "split_product", "complexity"),
    # The built-in rows (_builtin_rows, _register_builtins, _probe_pow) are made once, when the
    # module is imported, before mutmut activates a mutant: their mutants can never run.
    # _with_retries decorates the methods when the module is imported (its mutants never run);
    # mutmut does not mutate the decorated methods themselves (_create, open_run, set_status,
    # record_evaluations, record_generation).
    "runstore": ("sqlite_url", "database_url", "RunStore", "default_store_url", "run_store_url",
                 "open_run_store", "store_size_bytes", "store_of_run"),
    "trainer": ("resolve_device", "batch_schedule", "epoch_batches", "_Population", "_make_optimizer", "_freeze",
                "_clip_per_model", "_signature", "train_population", "_train", "_train_seeded",
                "bytes_per_candidate", "memory_budget", "default_max_population"),
    "table": ("register", "unregister", "probe", "_derived_export", "get_primitive", "primitives",
              "row_for_head"),
}

# Appended to the staged tests/conftest.py.  mutmut runs a mutant's tests with -x (stop at the
# first failure) in an order of its choosing; fastest first (the durations of its own clean
# run, mutants/mutmut-stats.json), a killed mutant costs its quickest failing test instead of
# whatever slow property test came first.
FASTEST_FIRST = """

def pytest_collection_modifyitems(config, items):  # added by experiments/mutation.py
    import json
    import pathlib

    try:
        durations = json.loads(pathlib.Path("mutmut-stats.json").read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError):  # mutmut's first (timing) run: keep pytest's order
        return
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
"""

KILLED = {"killed", "timeout"}
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout",
          37: "caught by type check", -11: "segfault", -9: "segfault", None: "not checked"}


def equivalents() -> dict[str, str]:
    """Mutant name -> reason, from the list next to this script (lines ``- `name`: reason``)."""
    if not EQUIVALENTS.exists():
        return {}
    out = {}
    for line in EQUIVALENTS.read_text().splitlines():
        m = re.match(r"\s*[-*]\s*`([^`]+)`\s*[:\-\u2014]+\s*(.+)", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def stage(work: Path, source: str, tests: list[str], tests_from: str | None = None) -> None:
    """A copy of the package laid out as lossforge/<part>/ plus the tests and a mutmut config."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".fuzz-canary*")
    for part in PACKAGES:
        shutil.copytree(ROOT / part, work / "lossforge" / part, ignore=ignore)
    stage_tests(work, source, tests, tests_from)


def stage_tests(work: Path, source: str, tests: list[str], tests_from: str | None = None) -> None:
    """tests/ and the mutmut config.  ``tests_from``: take tests/ from that git revision
    instead of the working tree (the sources are always the working tree's), e.g. to
    measure the score before tests were added."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".fuzz-canary*")
    for where in (work / "tests", work / "mutants" / "tests"):
        if where.exists():
            shutil.rmtree(where)
    if tests_from:
        archive = subprocess.run(["git", "archive", tests_from, "tests"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive.stdout, check=True)
    else:
        shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    with open(work / "tests" / "conftest.py", "a") as fh:
        fh.write(FASTEST_FIRST)
    if (work / "mutants").exists():  # a re-run: mutmut copies tests/ only when it creates mutants/
        shutil.copytree(work / "tests", work / "mutants" / "tests")
    missing = [t for t in tests if not (work / t.split("::")[0]).exists()]
    tests = [t for t in tests if t not in missing]
    if missing:
        print(f"  (test files not present, skipped: {', '.join(missing)})")
    if not tests:  # an empty selection would make pytest collect every test under mutants/
        raise FileNotFoundError("none of the module's test files exist")
    toml_list = lambda xs: "[" + ", ".join(json.dumps(x) for x in xs) + "]"  # noqa: E731
    config = (
        "[tool.mutmut]\n"
        f'source_paths = ["lossforge"]\n'
        f"only_mutate = {toml_list(['lossforge/' + source])}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-m", "not slow", "-W", "ignore::DeprecationWarning"]\n'
        "use_git_change_detection = false\n"
        "track_dependencies = false\n"
        "\n[tool.pytest.ini_options]\n"
        'markers = ["slow: long end-to-end runs"]\n'
    )
    for where in (work, work / "mutants"):
        if where.exists():
            (where / "pyproject.toml").write_text(config)


def load_results(work: Path, source: str) -> dict[str, str]:
    meta = work / "mutants" / "lossforge" / (source + ".meta")
    if not meta.exists():
        return {}
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {name: STATUS.get(code, "suspicious") for name, code in codes.items()}


def keep(name: str, module: str) -> bool:
    only = ONLY_FUNCTIONS.get(module)
    if not only:
        return True
    func = name.rsplit(".", 1)[-1].split("__mutmut_")[0]
    return any(func.endswith("_" + f) or func.endswith("\u01c1" + f) or f"\u01c1{f}\u01c1" in func for f in only)


def run_module(module: str, workroot: Path, timeout: int, show: bool, tests_from: str | None = None,
               again: bool = False, only_tests: list[str] | None = None, report: bool = False,
               jobs: int = 2) -> dict:
    source, tests = MODULES[module]
    tests = only_tests or tests
    work = workroot / module
    print(f"== {module}: {source}  tests: {' '.join(tests)}", flush=True)
    names = ""
    if module in ONLY_FUNCTIONS:
        mod = "lossforge." + source[:-3].replace("/", ".")
        names = " ".join(f"'{mod}.x_{f}__mutmut_*' '{mod}.x\u01c1{f}\u01c1*__mutmut_*'" for f in ONLY_FUNCTIONS[module])
    previous = {k: v for k, v in load_results(work, source).items() if keep(k, module)} if again else {}
    if report:
        return summarise(module, source, work, {k: v for k, v in load_results(work, source).items()
                                                 if keep(k, module)}, 0.0, show, {})
    if previous:
        # Re-test only what survived the last run in this workdir, against the current tests
        # (the staged sources, hence the mutants, are the last run's; a mutant killed then
        # stays killed, as tests were only added).  The test-to-function map is rebuilt.
        stage_tests(work, source, tests, tests_from)
        (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
        # The mutants listed as equivalent cannot be killed: they are not re-run.
        eq = equivalents()
        rerun = sorted(k for k, v in previous.items() if v not in KILLED and k not in eq)
        print(f"  re-running the {len(rerun)} survivors of the previous run in {work} "
              f"({sum(1 for k, v in previous.items() if v not in KILLED and k in eq)} listed as equivalent are not)")
        if not rerun:
            return summarise(module, source, work, previous, 0.0, show, {})
        names = " ".join(f"'{n}'" for n in rerun)
    else:
        try:
            stage(work, source, tests, tests_from)
        except FileNotFoundError as exc:
            print(f"  not run: {exc}")
            return summarise(module, source, work, {}, 0.0, False, {})
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    start = time.monotonic()
    cmd = f"timeout {timeout} mutmut run --max-children {jobs} {names}"
    proc = subprocess.run(cmd, shell=True, cwd=work, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    log = (proc.stdout or "") + (proc.stderr or "")
    (work / "mutmut.log").write_text(log)
    results = {k: v for k, v in load_results(work, source).items() if keep(k, module)}
    if proc.returncode != 0 or not results:
        tail = "\n".join(log.splitlines()[-15:])
        print(f"  mutmut exited {proc.returncode} after {elapsed:.0f} s (124 = --timeout reached)\n{tail}")
    return summarise(module, source, work, results, elapsed, show, env)


def summarise(module: str, source: str, work: Path, results: dict[str, str], elapsed: float, show: bool,
              env: dict) -> dict:
    eq = equivalents()
    counts: dict[str, int] = {}
    for status in results.values():
        counts[status] = counts.get(status, 0) + 1
    equiv = sorted(n for n, s in results.items() if n in eq and s not in KILLED)
    killed = sum(1 for s in results.values() if s in KILLED)
    checked = sum(1 for s in results.values() if s != "not checked")
    denominator = checked - len(equiv) - counts.get("skipped", 0) - counts.get("caught by type check", 0)
    score = 100.0 * killed / denominator if denominator else float("nan")
    survivors = sorted(n for n, s in results.items() if s not in KILLED and n not in eq and s != "not checked")
    summary = {"module": module, "source": source, "mutants": len(results), "checked": checked,
               "killed": counts.get("killed", 0), "timeout": counts.get("timeout", 0),
               "survived": counts.get("survived", 0), "no_tests": counts.get("no tests", 0),
               "suspicious": counts.get("suspicious", 0) + counts.get("segfault", 0),
               "equivalent": len(equiv), "score": round(score, 1), "seconds": round(elapsed),
               "survivors": survivors}
    print(f"  {checked}/{len(results)} checked in {elapsed:.0f} s: killed {summary['killed']}, "
          f"timeout {summary['timeout']}, survived {summary['survived']}, no tests {summary['no_tests']}, "
          f"suspicious {summary['suspicious']}, equivalent {len(equiv)}  ->  score {score:.1f} %", flush=True)
    for name in survivors:
        print(f"  survivor ({results[name]}): {name}")
        if show:
            diff = subprocess.run(["mutmut", "show", name], cwd=work, env=env or None, capture_output=True,
                                  text=True)
            print("\n".join("      " + line for line in diff.stdout.splitlines()[1:]))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help=f"modules to mutate (default all): {', '.join(MODULES)}")
    ap.add_argument("--list", action="store_true", help="list the modules and their test selections")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per module (default 900)")
    ap.add_argument("--jobs", type=int, default=2, help="mutants tested at once (mutmut's --max-children; "
                                                         "default 2, one per core of this machine)")
    ap.add_argument("--workdir", type=Path, help="staging folder (kept; default a temporary one, removed)")
    ap.add_argument("--show", action="store_true", help="print the diff of every survivor")
    ap.add_argument("--json", type=Path, help="also write the per-module summaries here")
    ap.add_argument("--tests", nargs="+", metavar="PATH", help="run these tests instead of the module's selection "
                                                             "(one module only)")
    ap.add_argument("--report", action="store_true", help="only print the results of the last run in --workdir")
    ap.add_argument("--again", action="store_true", help="in --workdir, re-test only the survivors of the last "
                                                          "run there (after adding tests)")
    ap.add_argument("--tests-from", metavar="REV", help="run the tests of this git revision (e.g. to measure "
                                                        "the score before tests were added)")
    args = ap.parse_args(argv)
    if args.list:
        for name, (source, tests) in MODULES.items():
            part = "  (part of canonical; run by name only)" if name in PARTS else ""
            print(f"{name:17s} {source:26s} {' '.join(tests)}{part}")
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        ap.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    if shutil.which("mutmut") is None:
        ap.error("mutmut is not installed; pip install -e '.[mutation]'")
    if args.tests and len(args.modules) != 1:
        ap.error("--tests needs exactly one module")
    if (args.again or args.report) and args.workdir is None:
        ap.error("--again and --report need the --workdir of the previous run")
    workroot = args.workdir or Path(tempfile.mkdtemp(prefix="lossforge-mutation-"))
    summaries = []
    try:
        for module in args.modules or [m for m in MODULES if m not in PARTS]:
            summaries.append(run_module(module, workroot, args.timeout, args.show, args.tests_from, args.again,
                                        args.tests, args.report, args.jobs))
    finally:
        if args.workdir is None:
            shutil.rmtree(workroot, ignore_errors=True)
    print("\nmodule         mutants  killed  timeout  survived  no-tests  equivalent  score")
    for s in summaries:
        print(f"{s['module']:13s} {s['mutants']:8d} {s['killed']:7d} {s['timeout']:8d} {s['survived']:9d} "
              f"{s['no_tests']:9d} {s['equivalent']:11d}  {s['score']:5.1f} %")
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
