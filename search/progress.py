"""Progress display: a tqdm bar on a terminal, one line per generation otherwise
(``quiet``: generation lines only, for logs)."""
from __future__ import annotations

import sys


class Progress:
    def __init__(self, config, quiet: bool = False, enabled: bool | None = None):
        self.config = config
        self.quiet = quiet
        self.enabled = (sys.stderr.isatty() and not quiet) if enabled is None else (enabled and not quiet)
        self.bar = None
        self.evaluations = 0

    def start(self, generation: int) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=self.config.generations, initial=generation, desc=self.config.name,
                            unit="gen", dynamic_ncols=True, file=sys.stderr)

    def evaluated(self, n: int) -> None:
        self.evaluations += n
        if self.bar is not None:
            self.bar.set_postfix_str(f"evals={self.evaluations}", refresh=True)

    def generation_done(self, gen: int, summary: dict, best) -> None:
        f = summary["filters"]
        removed = sum(v for k, v in f.items() if k not in ("evaluated", "promoted", "failed", "duplicate"))
        best_txt = f"{best.fitness:+.4f} {best.expr}" if best else "-"
        line = (f"gen {gen + 1}/{self.config.generations}  evals={self.evaluations}  "
                f"trained={f['evaluated']}  filtered={removed}/{summary['n_candidates']}  "
                f"dup={f['duplicate'] + f['fingerprint_duplicate']}  best={best_txt}")
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
