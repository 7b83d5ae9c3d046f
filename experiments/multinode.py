"""A two-node Ray cluster on loopback runs a search; its hall of fame must equal a local run's.

    python experiments/multinode.py [--port 6390] [--keep]

Starts a Ray head (``ray start --head --port=PORT --num-cpus=1``) and a second
node joining it (``ray start --address=127.0.0.1:PORT --num-cpus=1``), waits
until the cluster shows two nodes, runs ``lossforge search CONFIG --address
127.0.0.1:PORT`` and ``lossforge search CONFIG --local`` on the same small
config, and compares the two hall-of-fame files and the recorded metrics.

Ray token authentication (on by default for ``ray start`` clusters since Ray
2.5x) is switched off with ``RAY_AUTH_MODE=disabled`` for the nodes and the
drivers: the cluster listens on loopback only.

Both nodes are started with ``--block`` and stopped by their process ids
(SIGTERM, which makes each stop the Ray processes it started), not with
``ray stop``, which stops every Ray process of this user on the machine --
other Ray sessions included.  Each node gets its own ``--temp-dir``.

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

[search]
tasks = ["digits"]
generations = 2
population = 8
seed = 7

[evaluation]
steps = 60
chunk_size = 2
"""


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
        proc.kill()
        proc.wait(timeout=10)


def metrics(run_dir: Path) -> list[tuple]:
    with sqlite3.connect(run_dir / "runs.db") as conn:
        return sorted(conn.execute("SELECT canonical, task, seed, steps, metric, status FROM lf_evaluations"))


def workers(run_dir: Path) -> set[str]:
    with sqlite3.connect(run_dir / "runs.db") as conn:
        return {w for (w,) in conn.execute("SELECT DISTINCT worker FROM lf_evaluations")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=6390)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, run directories)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the cluster")
    args = ap.parse_args(argv)

    ray = ray_cli()
    if ray is None:
        print("multinode: the `ray` command is not installed (pip install 'ray[default]')", file=sys.stderr)
        return 2
    address = f"127.0.0.1:{args.port}"
    # short path: Ray's unix sockets live under the temp dir (107-byte limit)
    work = Path(tempfile.mkdtemp(prefix="lfmn-", dir="/tmp"))
    cfg = work / "search.toml"
    cfg.write_text(CONFIG)
    env = ray_env()
    nodes: list[subprocess.Popen] = []
    status = 2
    try:
        t0 = time.perf_counter()
        nodes.append(start_node(ray, ["--head", f"--port={args.port}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                                      "--include-dashboard=false", f"--temp-dir={work}/h"], work / "head.log"))
        deadline = time.monotonic() + args.timeout
        while alive_nodes(address) < 1:
            if nodes[0].poll() is not None or time.monotonic() > deadline:
                print(f"multinode: the Ray head did not start; its log:\n{(work / 'head.log').read_text()[-3000:]}",
                      file=sys.stderr)
                return 2
            time.sleep(1)
        nodes.append(start_node(ray, [f"--address={address}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                                      f"--temp-dir={work}/w"], work / "worker.log"))
        while (n := alive_nodes(address)) < 2:
            if nodes[1].poll() is not None or time.monotonic() > deadline:
                print(f"multinode: the second node did not join ({n} alive); its log:\n"
                      f"{(work / 'worker.log').read_text()[-3000:]}", file=sys.stderr)
                return 2
            time.sleep(1)
        print(f"cluster up at {address}: 2 nodes, 1 CPU each ({time.perf_counter() - t0:.1f} s)")

        t0 = time.perf_counter()
        cluster = subprocess.run([*lossforge_cmd(), "search", str(cfg), "--address", address, "--run-dir",
                                  str(work / "cluster"), "--quiet"], capture_output=True, text=True, env=env)
        t_cluster = time.perf_counter() - t0
        if cluster.returncode != 0:
            print(f"multinode: the search on the cluster failed:\n{cluster.stderr[-3000:]}", file=sys.stderr)
            return 1
        t0 = time.perf_counter()
        local = subprocess.run([*lossforge_cmd(), "search", str(cfg), "--local", "--run-dir", str(work / "local"),
                                "--quiet"], capture_output=True, text=True, env=env)
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
        status = 0 if same_hof and same_metrics else 1
        summary = {"hall_of_fame_identical": same_hof, "metrics_identical": same_metrics,
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
