"""report.html: rendered by a real headless Chromium, kept current by --watch; the run's Optuna
studies open with Optuna's own tools; a seed loss given as an expression starts the search."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
from markupsafe import escape

from lossforge.primitives import GrammarError, parse
from lossforge.search import SearchConfig
from lossforge.search.html_report import watch
from lossforge.search.report import report

from .report_run import SEED_EXPRESSION, shared_run

PNG = b"\x89PNG\r\n\x1a\n"


def _esc(text: str) -> str:
    return str(escape(text))  # as Jinja2's autoescape writes it
FIGURES = ("fitness", "filters", "pareto", "shapes")


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def page(search, tmp_path_factory):
    result, _, _ = search
    out = tmp_path_factory.mktemp("html")
    rep = report(result.run_dir, out=out)
    return rep, rep.html.read_text(encoding="utf-8")


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")


def _browser(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={cwd / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=cwd)


def test_the_page_is_self_contained(page, search):
    rep, text = page
    result, config, _ = search
    assert rep.html.name == "report.html" and rep.html.parent == rep.out
    assert "<script src" not in text and "http://" not in text.replace("http-equiv", "")
    assert "https://" not in text and 'href="' not in text  # nothing to fetch: it opens offline
    for key in FIGURES:
        m = re.search(rf'<img id="fig-{key}"[^>]* src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
        assert m, f"figure {key} is not embedded"
        import base64

        assert base64.b64decode(m.group(1))[:8] == PNG
    assert _esc(result.hall_of_fame[0].expr) in text
    assert result.run_id in text and "finished" in text
    assert 'http-equiv="refresh"' not in text  # a finished run's page does not reload itself
    config_toml = re.search(r'<pre id="config-toml">(.*?)</pre>', text, re.S).group(1)  # the run's config
    assert "seed_losses" in config_toml and _esc(f'"{SEED_EXPRESSION}"') in config_toml


def test_confirmed_figures_next_to_search_fitness(page, search):
    """With confirmation.json (the search confirmed its best), the table shows the verdicts;
    without it, the page says these are search figures only."""
    rep, text = page
    result, _, _ = search
    path = Path(result.run_dir) / "confirmation.json"
    if not path.exists():
        assert "Not confirmed on fresh seeds" in text and "confirmed fitness" not in text
        return
    verdicts = json.loads(path.read_text())
    assert "confirmed fitness" in text
    for v in verdicts:
        row = re.search(r"<tr>\s*<td>\d+</td><td class=\"expr\">" + re.escape(_esc(v["expr"])) +
                        r"</td>(.*?)</tr>", text, re.S)
        assert row, v["expr"]
        assert (">\n              yes</td>" if v["confirmed"] else ">\n              no</td>") in row.group(1)
        assert f"{v['fitness']:+.4f}" in row.group(1)


def test_chromium_renders_the_table_and_the_plots(page, search, tmp_path):
    rep, text = page
    result, _, _ = search
    # The same page plus a probe that records, once loaded, what the browser decoded.
    probe = ("<script>window.addEventListener('load', () => { document.body.dataset.images = "
             "[...document.images].map(i => i.id + ':' + i.naturalWidth + 'x' + i.naturalHeight).join(' '); "
             "document.body.dataset.rows = document.querySelectorAll('#hall-of-fame tbody tr').length; });</script>")
    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("</body>", probe + "</body>"), encoding="utf-8")
    done = _browser("--virtual-time-budget=5000", "--dump-dom", probed.as_uri(), cwd=tmp_path)
    dom = done.stdout
    assert done.returncode == 0 and "<table id=\"hall-of-fame\">" in dom, done.stderr[-2000:]
    images = dict(item.split(":") for item in re.search(r'data-images="([^"]*)"', dom).group(1).split())
    assert set(images) == {f"fig-{k}" for k in FIGURES}
    for size in images.values():
        w, h = map(int, size.split("x"))
        assert w > 300 and h > 200  # decoded PNGs, not broken-image icons
    rows = int(re.search(r'data-rows="(\d+)"', dom).group(1))
    assert rows == min(20, len(result.hall_of_fame))
    assert _esc(result.hall_of_fame[0].expr) in dom
    shot = rep.out / "report_screenshot.png"
    done = _browser("--window-size=1300,2400", f"--screenshot={shot}", rep.html.as_uri(), cwd=tmp_path)
    assert done.returncode == 0 and shot.read_bytes()[:8] == PNG, done.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (2400, 1300) and pixels.std() > 0.05  # a page, not a blank screen


def test_optuna_opens_the_runs_tuning_study(page, search):
    """What the page prints -- optuna.load_study(study_name=..., storage=<the run's store URL>) -- works."""
    rep, text = page
    result, config, _ = search
    m = re.search(r'optuna\.load_study\(study_name="([^"]+)", storage="([^"]+)"\)', text)
    assert m, "the page shows how to open the study"
    name, url = m.groups()
    assert name == f"{result.run_id}-tune-0" and url == f"sqlite:///{Path(result.run_dir).resolve() / 'runs.db'}"
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == config.tune_trials and all(p.startswith("c") for p in trials[0].params)
    assert any(e.origin == "tuned" for e in result.hall_of_fame)
    assert f"<code>{name}</code></td><td>{len(trials)}</td>" in text


def test_optuna_dashboard_serves_the_runs_studies(search):
    optuna_dashboard = pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is in the test extra")
    from wsgiref.util import setup_testing_defaults

    result, _, _ = search
    app = optuna_dashboard.wsgi(f"sqlite:///{Path(result.run_dir).resolve() / 'runs.db'}")
    environ = {"PATH_INFO": "/api/studies", "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app(environ, lambda s, h, *a: status.append(s)))
    assert status[0].startswith("200")
    names = [s["study_name"] for s in json.loads(body)["study_summaries"]]
    assert f"{result.run_id}-tune-0" in names


def test_a_seed_loss_can_be_an_expression(search):
    from lossforge.search.runstore import store_of_run

    result, _, _ = search
    store, run_id = store_of_run(result.run_dir)
    try:
        seeded = [c for c in store.candidates(run_id, 0) if c["origin"] == "seed"]
    finally:
        store.close()
    assert parse(SEED_EXPRESSION).canonical in {c["canonical"] for c in seeded}
    with pytest.raises(GrammarError, match=r"seed_losses: '-y\*log\(p' .*'\(' was never closed"):
        SearchConfig(seed_losses=["-y*log(p"])


# ----------------------------------------------------------------------------- --watch
def _copy(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns("report", ".lock"))
    return to


def _set_status(run_dir: Path, status: str) -> None:
    from lossforge.search.runstore import store_of_run

    store, run_id = store_of_run(run_dir)
    try:
        store.set_status(run_id, status)
    finally:
        store.close()


def test_watch_rewrites_the_page_until_the_run_finishes(search, tmp_path):
    result, _, _ = search
    run_dir = _copy(Path(result.run_dir), tmp_path / "run")
    _set_status(run_dir, "running")
    seen, looks = [], []

    def on_update(rep, status):
        seen.append((status, 'http-equiv="refresh" content="2"' in rep.html.read_text()))

    def sleep(seconds):  # a search writing two more generations, then finishing
        looks.append(seconds)
        if len(looks) in (1, 2):
            ckpt = run_dir / "checkpoint.json"
            ckpt.write_text(ckpt.read_text() + " ")  # what a new generation does to the checkpoint
        elif len(looks) == 3:
            pass  # nothing new: no rewrite
        else:
            _set_status(run_dir, "finished")

    rep, why = watch(run_dir, interval=2, on_update=on_update, sleep=sleep)
    assert why == "finished" and looks == [2, 2, 2, 2]
    assert seen == [("running", True)] * 3 + [("finished", False)]
    assert rep.html == run_dir / "report" / "report.html"


def test_watch_gives_up_on_a_run_that_stopped_writing(search, tmp_path, capsys):
    from lossforge.search.cli import main

    result, _, _ = search
    run_dir = _copy(Path(result.run_dir), tmp_path / "run")
    _set_status(run_dir, "running")  # killed with SIGKILL: the store still says running
    assert main(["report", str(run_dir), "--watch", "--interval", "0.05", "--idle-timeout", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "no new generation for 0.2 s" in out and "report.html: rewritten (run running)" in out
    assert main(["report", str(run_dir), "--watch", "--interval", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err


@pytest.mark.slow
def test_watch_follows_a_real_search(tmp_path):
    """A search in another process, watched from its start: the page is rewritten while the run
    is going (and reloads itself), and watching ends when the run finishes."""
    import sys

    config = tmp_path / "small.toml"
    config.write_text('[search]\ntasks = ["digits"]\ngenerations = 3\npopulation = 8\n[evaluation]\nsteps = 60\n'
                      'evaluator = "local"\n[store]\nsave_best = 0\n[confirmation]\nconfirm_top = 0\n', encoding="utf-8")
    run_dir = tmp_path / "run"
    search = subprocess.Popen([sys.executable, "-m", "lossforge.search.cli", "search", str(config), "--run-dir",
                               str(run_dir), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = []
    try:
        rep, why = watch(run_dir, interval=0.5, idle_timeout=300,
                         on_update=lambda rep, status: seen.append((status, rep.html.read_text())))
    finally:
        err = search.communicate(timeout=600)[1]
    assert search.returncode == 0, err.decode()[-2000:]
    assert why == "finished" and seen[-1][0] == "finished" and 'http-equiv="refresh"' not in seen[-1][1]
    running = [page for status, page in seen if status == "running"]
    assert running and all('http-equiv="refresh" content="1"' in page for page in running)  # 0.5 s: at least 1
    assert len(seen) >= 2
