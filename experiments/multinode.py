"""A two-node Ray cluster on loopback runs a search; its hall of fame must equal a local run's.

    python experiments/multinode.py [--port 6390] [--kill-node-after N] [--keep]

Starts a Ray head (``ray start --head --port=PORT --num-cpus=1``) and a second
node joining it (``ray start --address=127.0.0.1:PORT --num-cpus=1``), waits
until the cluster shows two nodes, runs ``lossforge search CONFIG --address
127.0.0.1:PORT`` and ``lossforge search CONFIG --local`` on the same small
config, and compares the two hall-of-fame files and the recorded metrics.

``--kill-node-after N``: once the cluster run has recorded N evaluations and
both nodes have delivered results, the second node is killed (SIGKILL to every process of that node: its raylet and
its workers, as when a machine is lost).  Its jobs are lost to the
infrastructure, retried on the head's worker, and the hall of fame must still
equal the local run's.

Ray token authentication (on by default for ``ray start`` clusters since Ray
2.5x) is switched off with ``RAY_AUTH_MODE=disabled`` for the nodes and the
drivers: the cluster listens on loopback only.

Both nodes are started with ``--block`` in their own process group and stopped
by their process ids (SIGTERM, which makes each stop the Ray processes it
started), not with ``ray stop``, which stops every Ray process of this user on
the machine -- other Ray sessions included.  Each node gets its own
``--temp-dir``.

Exit status: 0 when the hall of fame matches, 1 when it differs, 2 when the
cluster could not be started (the reason is printed).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """\
name = "multinode"
save_best = 0
confirm_top = 0

[search]
tasks = ["digits"]
generations = 2
population = 8
seed = 7

[evaluation]
steps = 60
chunk_size = 2
max_retries = 3
"""


class ClusterError(RuntimeError):
    """The loopback cluster could not be started."""


def ray_cli() -> str | None:
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else shutil.which("ray")


def lossforge_cmd() -> list[str]:
    return [sys.executable, "-m", "lossforge.search.cli"]


def ray_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    return env


def alive_nodes(address: str, timeout: float = 60.0) -> int:
    """Alive nodes of the cluster, asked from a fresh driver process."""
    code = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
            "print(sum(1 for n in ray.nodes() if n['Alive'])); ray.shutdown()")
    try:
        out = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, timeout=timeout,
                             env=ray_env())
    except subprocess.TimeoutExpired:
        return 0
    if out.returncode != 0:
        return 0
    try:
        return int(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


def start_node(ray: str, args: list[str], log: Path) -> subprocess.Popen:
    fh = open(log, "w")
    return subprocess.Popen([ray, "start", "--block", "--disable-usage-stats", *args], stdout=fh,
                            stderr=subprocess.STDOUT, start_new_session=True, env=ray_env())


def stop_node(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_node(proc)


def kill_node(proc: subprocess.Popen) -> None:
    """Lose the node: SIGKILL every process of its process group (the ``ray start``
    process, its raylet and its workers), with no chance to clean up."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group this script created for the node (start_new_session)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def start_cluster(work: Path, port: int, timeout: float = 120.0) -> tuple[str, list[subprocess.Popen]]:
    """A head and a second node on loopback, 1 CPU each; returns (address, [head, node]).
    On failure the nodes already started are stopped and ClusterError says why."""
    ray = ray_cli()
    if ray is None:
        raise ClusterError("the `ray` command is not installed (pip install 'lossforge[cluster]')")
    address = f"127.0.0.1:{port}"
    nodes: list[subprocess.Popen] = []
    try:
        nodes.append(start_node(ray, ["--head", f"--port={port}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                                      "--include-dashboard=false", f"--temp-dir={work}/h"], work / "head.log"))
        deadline = time.monotonic() + timeout
        while alive_nodes(address) < 1:
            if nodes[0].poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"the Ray head did not start; its log:\n{(work / 'head.log').read_text()[-3000:]}")
            time.sleep(1)
        nodes.append(start_node(ray, [f"--address={address}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                                      f"--temp-dir={work}/w"], work / "worker.log"))
        while (n := alive_nodes(address)) < 2:
            if nodes[1].poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"the second node did not join ({n} alive); its log:\n"
                                   f"{(work / 'worker.log').read_text()[-3000:]}")
            time.sleep(1)
    except BaseException:
        for proc in reversed(nodes):
            stop_node(proc)
        raise
    return address, nodes


def evaluations_recorded(run_dir: Path) -> int:
    try:
        with sqlite3.connect(f"file:{run_dir / 'runs.db'}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM lf_evaluations WHERE generation >= 0").fetchone()[0]
    except sqlite3.Error:
        return 0


def metrics(run_dir: Path) -> list[tuple]:
    with sqlite3.connect(run_dir / "runs.db") as conn:
        return sorted(conn.execute("SELECT canonical, task, seed, steps, metric, status FROM lf_evaluations"))


def workers(run_dir: Path) -> set[str]:
    try:
        with sqlite3.connect(f"file:{run_dir / 'runs.db'}?mode=ro", uri=True, timeout=5) as conn:
            return {w for (w,) in conn.execute("SELECT DISTINCT worker FROM lf_evaluations")}
    except sqlite3.Error:
        return set()


def cluster_search(cfg: Path, address: str, run_dir: Path, nodes: list[subprocess.Popen],
                   kill_after: int | None = None, timeout: float = 900.0) -> tuple[subprocess.CompletedProcess, bool]:
    """``lossforge search CFG --address ADDRESS``; with ``kill_after``, the second
    node is killed once that many evaluations are recorded.  Returns the finished
    process and whether the node was killed while the search ran."""
    with open(run_dir.parent / f"{run_dir.name}.out", "w") as out, \
            open(run_dir.parent / f"{run_dir.name}.err", "w") as err:
        proc = subprocess.Popen([*lossforge_cmd(), "search", str(cfg), "--address", address, "--run-dir",
                                 str(run_dir), "--quiet"], stdout=out, stderr=err, text=True, env=ray_env())
        killed = False
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if (kill_after is not None and not killed and evaluations_recorded(run_dir) >= kill_after
                    and len(workers(run_dir)) >= 2):  # both nodes have delivered results: the second is busy
                kill_node(nodes[1])
                killed = True
            time.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    stdout = (run_dir.parent / f"{run_dir.name}.out").read_text()
    stderr = (run_dir.parent / f"{run_dir.name}.err").read_text()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), killed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=6390)
    ap.add_argument("--kill-node-after", type=int, default=None, metavar="N",
                    help="kill the second node once the cluster run has recorded N evaluations")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, run directories)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the cluster")
    args = ap.parse_args(argv)

    # short path: Ray's unix sockets live under the temp dir (107-byte limit)
    work = Path(tempfile.mkdtemp(prefix="lfmn-", dir="/tmp"))
    cfg = work / "search.toml"
    cfg.write_text(CONFIG)
    nodes: list[subprocess.Popen] = []
    try:
        t0 = time.perf_counter()
        try:
            address, nodes = start_cluster(work, args.port, args.timeout)
        except ClusterError as exc:
            print(f"multinode: {exc}", file=sys.stderr)
            return 2
        print(f"cluster up at {address}: 2 nodes, 1 CPU each ({time.perf_counter() - t0:.1f} s)")

        t0 = time.perf_counter()
        cluster, killed = cluster_search(cfg, address, work / "cluster", nodes, kill_after=args.kill_node_after)
        t_cluster = time.perf_counter() - t0
        if cluster.returncode != 0:
            print(f"multinode: the search on the cluster failed ({cluster.returncode}):\n{cluster.stderr[-3000:]}",
                  file=sys.stderr)
            return 1
        if args.kill_node_after is not None:
            print(f"second node killed during the search: {'yes' if killed else 'NO (the search ended first)'}")
        t0 = time.perf_counter()
        local = subprocess.run([*lossforge_cmd(), "search", str(cfg), "--local", "--run-dir", str(work / "local"),
                                "--quiet"], capture_output=True, text=True, env=ray_env())
        t_local = time.perf_counter() - t0
        if local.returncode != 0:
            print(f"multinode: the local search failed:\n{local.stderr[-3000:]}", file=sys.stderr)
            return 1

        hof_cluster = (work / "cluster" / "hall_of_fame.csv").read_text()
        hof_local = (work / "local" / "hall_of_fame.csv").read_text()
        same_hof = hof_cluster == hof_local
        same_metrics = metrics(work / "cluster") == metrics(work / "local")
        used = workers(work / "cluster")
        print(f"search on the cluster: {t_cluster:.1f} s, {len(used)} worker processes: {', '.join(sorted(used))}")
        print(f"search in-process:     {t_local:.1f} s")
        print(f"hall of fame identical: {'yes' if same_hof else 'NO'}; recorded metrics identical: "
              f"{'yes' if same_metrics else 'NO'}")
        print(hof_cluster.strip())
        status = 0 if same_hof and same_metrics and (killed or args.kill_node_after is None) else 1
        summary = {"hall_of_fame_identical": same_hof, "metrics_identical": same_metrics, "node_killed": killed,
                   "worker_processes": len(used), "cluster_seconds": t_cluster, "local_seconds": t_local}
        (work / "summary.json").write_text(json.dumps(summary, indent=2))
        return status
    finally:
        for proc in reversed(nodes):
            stop_node(proc)
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
