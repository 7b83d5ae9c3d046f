"""Progress display: a tqdm bar on a terminal, one line per generation otherwise
(``quiet``: generation lines only, for logs).

With a Ray evaluator the bar shows how many workers are busy now and each
generation line how busy they were over the generation (worker-seconds spent
running jobs / (workers x the generation's wall time)); where the Ray
dashboard is, when the cluster runs one, is printed once at the start.
"""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, config, quiet: bool = False, enabled: bool | None = None):
        self.config = config
        self.quiet = quiet
        self.enabled = (sys.stderr.isatty() and not quiet) if enabled is None else (enabled and not quiet)
        self.bar = None
        self.evaluations = 0
        self.evaluator = None
        self._mark = (0.0, time.monotonic())

    def watch(self, evaluator) -> None:
        """Report on this evaluator's workers (any evaluator: those without
        ``busy``/``busy_seconds`` are simply not reported on)."""
        self.evaluator = evaluator
        self._mark = (float(getattr(evaluator, "busy_seconds", 0.0)), time.monotonic())
        url = getattr(evaluator, "dashboard_url", None)
        if url:
            self.note(f"Ray dashboard: {url}")

    def _busy_now(self) -> str:
        ev = self.evaluator
        if ev is None or not hasattr(ev, "busy"):
            return ""
        return f" busy={ev.busy}/{ev.parallelism}"

    def _utilisation(self) -> str:
        """Workers' busy share since the last call ('' without a Ray evaluator)."""
        ev = self.evaluator
        if ev is None or not hasattr(ev, "busy_seconds"):
            return ""
        busy, now = float(ev.busy_seconds), time.monotonic()
        before, t0 = self._mark
        self._mark = (busy, now)
        if now <= t0:
            return ""
        return f"  workers={ev.parallelism} busy={(busy - before) / (ev.parallelism * (now - t0)):.0%}"

    def start(self, generation: int) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=self.config.generations, initial=generation, desc=self.config.name,
                            unit="gen", dynamic_ncols=True, file=sys.stderr)

    def evaluated(self, n: int) -> None:
        self.evaluations += n
        if self.bar is not None:
            self.bar.set_postfix_str(f"evals={self.evaluations}{self._busy_now()}", refresh=True)

    def generation_done(self, gen: int, summary: dict, best) -> None:
        f = summary["filters"]
        removed = sum(v for k, v in f.items() if k not in ("evaluated", "promoted", "failed", "duplicate"))
        best_txt = f"{best.fitness:+.4f} {best.expr}" if best else "-"
        line = (f"gen {gen + 1}/{self.config.generations}  evals={self.evaluations}  "
                f"trained={f['evaluated']}  filtered={removed}/{summary['n_candidates']}  "
                f"dup={f['duplicate'] + f['fingerprint_duplicate']}{self._utilisation()}  best={best_txt}")
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"evals={self.evaluations} best={best.fitness:+.4f}" if best else "")
            self.bar.write(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
