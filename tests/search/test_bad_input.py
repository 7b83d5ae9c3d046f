"""Bad input to ``lossforge search``: one clear error line, exit status 2, no traceback.

Every case goes through the real command line (``cli.main``); one goes through
a separate process to check what a user's terminal shows.  Nothing is written
for a config that is refused: no run directory appears.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lossforge.search import SearchConfig
from lossforge.search.cli import main
from lossforge.search.errors import ConfigError, StorageError

OK = 'tasks = ["digits"]\ngenerations = 1\npopulation = 4\nsteps = 5\n'

CASES = {
    "misspelt key": ("populaton = 10\n", "unknown key 'populaton' (did you mean 'population'?)"),
    "misspelt key in a section": ("[gp]\ncrosover_prob = 0.5\n",
                                  "unknown key 'crosover_prob' (did you mean 'crossover_prob'?)"),
    "unknown section": ("[gpp]\npopulation = 3\n", "unknown section [gpp] (did you mean 'gp'?)"),
    "unknown nested table": ("[search.inner]\nx = 1\n", "unknown key 'inner'"),
    "key given twice": ("[search]\ngenerations = 2\n[gp]\ngenerations = 3\n", "key 'generations' is given twice"),
    "string for int": ('generations = "ten"\n', "generations = 'ten' has the wrong type; expected int"),
    "float for int": ("population = 8.5\n", "population = 8.5 has the wrong type"),
    "bool for int": ("population = true\n", "population = True has the wrong type"),
    "string for list": ('tasks = "digits"\n', "tasks = 'digits' has the wrong type"),
    "number in a list": ('tasks = ["digits", 3]\n', "has the wrong type; expected list[str | Task]"),
    "number for a string": ("store = 5\n", "store = 5 has the wrong type"),
    "nan": ("crossover_prob = nan\n", "crossover_prob = nan must be finite"),
    "inf": ("time_limit = inf\n", "time_limit = inf must be finite"),
    "negative steps": ("steps = -5\n", "steps = -5 must be positive"),
    "zero generations": ("generations = 0\n", "generations = 0 must be positive"),
    "negative population": ("population = -8\n", "population = -8 must be positive"),
    "negative time limit": ("time_limit = -1.0\n", "time_limit = -1.0 must be positive"),
    "negative retries": ("max_retries = -1\n", "max_retries = -1 must not be negative"),
    "negative workers": ("workers = -2\n", "workers = -2 must be positive"),
    "probabilities over 1": ("crossover_prob = 0.8\nmutation_prob = 0.5\n", "exceeds 1"),
    "bad constant range": ("constant_range = [2.0, -2.0]\n", "constant_range"),
    "no tasks": ("tasks = []\n", "tasks is empty"),
    "unknown task": ('tasks = ["digts"]\n', "unknown task 'digts' (did you mean 'digits'?)"),
    "unknown primitive": ('primitives = ["add", "lgo"]\n', "unknown primitive 'lgo' (did you mean 'log'?)"),
    "code as a primitive": ('primitives = ["add", "__import__"]\n', "unknown primitive '__import__'"),
    "unknown seed loss": ('seed_losses = ["focall"]\n', "unknown loss 'focall' in seed_losses (did you mean 'focal'?)"),
    "unknown strategy": ('strategy = "gpp"\n', "strategy = 'gpp' is not one of gp, aging, random, family"),
    "unknown evaluator": ('evaluator = "rey"\n', "evaluator = 'rey' is not one of ray, local (did you mean 'ray'?)"),
    "path in the name": ('name = "../../elsewhere"\n', "name = '../../elsewhere' must be 1-40 letters"),
    "store not a URL": ('store = "not a url"\n', "store = 'not a url' is not a database URL"),
    "store of an unknown kind": ('store = "nosuchdb://host/x"\n', "is not a database URL"),
    "invalid TOML": ("generations = \n", "not valid TOML"),
    "unclosed table": ("[search\n", "not valid TOML"),
    "value redefined": ("generations = 2\ngenerations = 3\n", "not valid TOML"),
    "deeply nested TOML": ("x = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
}


def _check_one_line(capsys, fragment: str) -> str:
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("lossforge: error: ")
    assert "Traceback" not in err and captured.out == ""
    assert fragment in err, err
    return err


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_config_file_gives_one_clear_line_and_exit_status_2(case, tmp_path, capsys):
    text, fragment = CASES[case]
    path = tmp_path / "search.toml"
    path.write_text(text)
    run_dir = tmp_path / "run"
    assert main(["search", str(path), "--local", "--run-dir", str(run_dir)]) == 2
    _check_one_line(capsys, fragment)
    assert not run_dir.exists()


def _file(directory: Path, data: bytes | None) -> Path:
    path = directory / "search.toml"
    if data is not None:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("data, fragment", [
    (None, "does not exist"),
    (b'name = "caf\xe9"\n', "not valid TOML"),  # Latin-1, not UTF-8
    (b"\x00\xff\xfe", "not valid TOML"),
])
def test_an_unreadable_config_file_gives_one_clear_line(data, fragment, tmp_path, capsys):
    path = _file(tmp_path, data)
    assert main(["search", str(path), "--local"]) == 2
    err = _check_one_line(capsys, fragment)
    assert str(path) in err


@pytest.mark.parametrize("args, fragment", [
    (["--workers", "0"], "workers = 0 must be positive"),
    (["--workers", "-3"], "workers = -3 must be positive"),
    (["--seed", "-1"], "seed = -1 must not be negative"),
])
def test_bad_command_line_overrides_give_one_clear_line(args, fragment, tmp_path, capsys):
    path = tmp_path / "search.toml"
    path.write_text(OK)
    assert main(["search", str(path), "--local", "--run-dir", str(tmp_path / "run"), *args]) == 2
    _check_one_line(capsys, fragment)
    assert not (tmp_path / "run").exists()


def test_resume_of_something_that_is_not_a_run_gives_one_clear_line(tmp_path, capsys):
    assert main(["search", str(tmp_path), "--local"]) == 2  # a directory is not a config file
    _check_one_line(capsys, "does not exist")
    assert main(["search", "--resume", str(tmp_path / "nowhere")]) == 2
    _check_one_line(capsys, "is not a lossforge run directory")
    (tmp_path / "config.toml").write_text(OK)
    assert main(["search", str(tmp_path / "config.toml"), "--resume", str(tmp_path)]) == 2
    _check_one_line(capsys, "not both")
    assert main(["search"]) == 2
    _check_one_line(capsys, "missing CONFIG")


def test_the_python_api_raises_config_errors_naming_the_value():
    with pytest.raises(ConfigError, match="population = 'many' has the wrong type"):
        SearchConfig(population="many")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown task 'mnist'"):
        SearchConfig(tasks=["mnist"])
    with pytest.raises(ConfigError, match="steps = 0 must be positive"):
        SearchConfig(steps=0)
    with pytest.raises(ConfigError, match="elitism = 40 must be smaller than population = 32"):
        SearchConfig(elitism=40)
    with pytest.raises(ConfigError, match="unknown key 'generation' \\(did you mean 'generations'"):
        SearchConfig.from_dict({"generation": 3})
    with pytest.raises(ValueError):  # a ConfigError is a ValueError too
        SearchConfig(generations=-1)


def test_a_store_without_its_database_driver_is_a_storage_error(tmp_path):
    from lossforge.search.runstore import RunStore

    pytest.importorskip("sqlalchemy")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        with pytest.raises(StorageError, match="driver that is not installed"):
            RunStore("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(StorageError, match="not a usable database URL"):
        RunStore("nosuchdb://x/y")


def test_the_terminal_sees_one_line_and_no_traceback(tmp_path):
    path = tmp_path / "search.toml"
    path.write_text("populaton = 10\n")
    for command in ([sys.executable, "-m", "lossforge.search.cli"],
                    [str(Path(sys.executable).with_name("lossforge"))]):
        if not Path(command[-1]).exists() and len(command) == 1:
            continue  # no console script next to this interpreter
        proc = subprocess.run([*command, "search", str(path), "--local"], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
        assert proc.returncode == 2
        assert proc.stderr.splitlines() == [
            f"lossforge: error: {path}: unknown key 'populaton' (did you mean 'population'?)"]
        assert "Traceback" not in proc.stderr and proc.stdout == ""
        assert not (tmp_path / "runs").exists()
