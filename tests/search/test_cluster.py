"""Seeing and surviving the cluster.

Default set: the progress line reports the workers busy and where the Ray
dashboard is.  Slow set (``-m slow``): the README's "Run on a Ray cluster"
recipe on a two-node loopback cluster (``experiments/multinode.py`` starts it:
``ray start --head`` and ``ray start --address=127.0.0.1:PORT``, token
authentication off, each node stopped by its own process id), and the second
node killed mid-search: the hall of fame and every recorded metric equal an
in-process run's.
"""
from __future__ import annotations

import importlib.util
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from lossforge.search.progress import Progress

from .search_checks import small_config

REPO = Path(__file__).resolve().parents[2]


class FakeRayEvaluator:
    """What Progress reads from a RayEvaluator."""

    parallelism = 4
    dashboard_url = "http://127.0.0.1:8265"

    def __init__(self):
        self.busy = 0
        self.busy_seconds = 0.0


def test_the_progress_line_shows_the_workers_busy_and_the_dashboard(capsys, monkeypatch):
    import lossforge.search.progress as progress_module

    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    ev = FakeRayEvaluator()
    bar = Progress(small_config(), enabled=False)
    bar.watch(ev)
    assert capsys.readouterr().err == "Ray dashboard: http://127.0.0.1:8265\n"
    clock[0] += 10.0
    ev.busy_seconds = 30.0  # 4 workers x 10 s available, 30 s spent running jobs
    summary = {"filters": {"evaluated": 8, "promoted": 8, "failed": 0, "duplicate": 0, "fingerprint_duplicate": 0,
                           "constant": 0}, "n_candidates": 8}
    bar.generation_done(0, summary, None)
    line = capsys.readouterr().err
    assert "workers=4 busy=75%" in line, line
    ev.busy = 3
    assert bar._busy_now() == " busy=3/4"


def test_without_a_ray_evaluator_nothing_about_workers_is_shown(capsys):
    from lossforge.search.evaluators import LocalEvaluator

    bar = Progress(small_config(), enabled=False)
    bar.watch(LocalEvaluator({}))
    summary = {"filters": {"evaluated": 1, "promoted": 1, "failed": 0, "duplicate": 0, "fingerprint_duplicate": 0},
               "n_candidates": 1}
    bar.generation_done(0, summary, None)
    err = capsys.readouterr().err
    assert "busy" not in err and "dashboard" not in err


# ----------------------------------------------------------------------------- a two-node loopback cluster
def _multinode():
    spec = importlib.util.spec_from_file_location("multinode", REPO / "experiments" / "multinode.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    mn = _multinode()
    if mn.ray_cli() is None:
        pytest.skip("the `ray` command is not installed")
    work = Path(tempfile.mkdtemp(prefix="lfct-", dir="/tmp"))  # short: Ray's socket paths
    try:
        address, nodes = mn.start_cluster(work, _free_port())
    except mn.ClusterError as exc:
        pytest.fail(f"the loopback cluster did not start: {exc}")
    yield mn, work, address, nodes
    for proc in reversed(nodes):
        mn.stop_node(proc)
    shutil.rmtree(work, ignore_errors=True)


def _local_run(mn, work: Path) -> Path:
    import subprocess

    run_dir = work / "local"
    if not (run_dir / "hall_of_fame.csv").exists():
        out = subprocess.run([*mn.lossforge_cmd(), "search", str(work / "search.toml"), "--local", "--run-dir",
                              str(run_dir), "--quiet"], capture_output=True, text=True, env=mn.ray_env(), timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_the_readme_recipe_on_a_two_node_cluster_equals_a_local_run(cluster):
    mn, work, address, nodes = cluster
    (work / "search.toml").write_text(mn.CONFIG)
    result, killed = mn.cluster_search(work / "search.toml", address, work / "recipe", nodes)
    assert result.returncode == 0, result.stderr[-3000:]
    local = _local_run(mn, work)
    assert (work / "recipe" / "hall_of_fame.csv").read_text() == (local / "hall_of_fame.csv").read_text()
    assert mn.metrics(work / "recipe") == mn.metrics(local)
    assert len(mn.workers(work / "recipe")) >= 2  # both nodes did work


@pytest.mark.slow
def test_a_node_lost_mid_search_gives_the_undisturbed_hall_of_fame(cluster):
    mn, work, address, nodes = cluster
    (work / "search.toml").write_text(mn.CONFIG)
    result, killed = mn.cluster_search(work / "search.toml", address, work / "lost", nodes, kill_after=4)
    assert killed, "the search ended before the node could be killed"
    assert result.returncode == 0, result.stderr[-3000:]
    local = _local_run(mn, work)
    assert (work / "lost" / "hall_of_fame.csv").read_text() == (local / "hall_of_fame.csv").read_text()
    assert mn.metrics(work / "lost") == mn.metrics(local)  # no evaluation lost, none left as 'infra'
