"""The README's "Search a loss for your own model" example runs as written (in a fresh process)."""
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- user-example -->\s*```python\n(.*?)```", text, re.S)
    assert block, "the README lost its user-example block"
    return block.group(1)


def test_the_readme_user_model_example_runs(tmp_path):
    code = _example()
    assert len(code.strip().splitlines()) <= 25  # the README promises a short example
    script = tmp_path / "example.py"
    script.write_text(code + "\nprint('FINAL', best.expr, float(loss_fn(model(torch.zeros(2, 20)), torch.tensor([0, 1]))))\n")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("FINAL ") and (tmp_path / "found_loss.py").exists()
    assert "import lossforge" not in (tmp_path / "found_loss.py").read_text()
