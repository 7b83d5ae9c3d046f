"""A user's `module:function` task on a two-node loopback cluster (slow set): the module lives only in the
config's folder, not on any node's path; lossforge ships it with the job (runtime_env py_modules)."""
from __future__ import annotations

import pytest

from .test_cluster import _local_run, cluster  # noqa: F401  (the module-scoped two-node cluster fixture)
from .test_user_tasks import CONFIG, MODULE


@pytest.mark.slow
def test_a_user_task_module_only_in_the_config_folder_runs_on_a_two_node_cluster(cluster):  # noqa: F811
    mn, work, address, nodes = cluster
    project = work / "project"
    project.mkdir(exist_ok=True)
    (project / "my_tasks.py").write_text(MODULE.format(shift=0.0))
    (project / "search.toml").write_text(CONFIG)
    result, _ = mn.cluster_search(project / "search.toml", address, work / "user_run", nodes)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(mn.workers(work / "user_run")) >= 2  # workers on both nodes imported the shipped module
    (work / "search.toml").write_text(CONFIG)
    import shutil

    shutil.copy(project / "my_tasks.py", work / "my_tasks.py")  # the in-process run finds it next to its config
    local = _local_run(mn, work)
    assert (work / "user_run" / "hall_of_fame.csv").read_text() == (local / "hall_of_fame.csv").read_text()
