"""Hall of fame and Pareto front of a search (full-budget candidates only)."""
from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field

from lossforge.primitives import Expr, parse


@dataclass
class Entry:
    expr: str
    canonical: str
    complexity: int
    fitness: float
    scores: dict[str, float | None] = field(default_factory=dict)   # per-task metric (mean over seeds)
    generation: int = 0
    origin: str = ""
    confirmation: dict | None = None   # the verdict of search.confirm (None: not confirmed yet)

    @property
    def expression(self) -> Expr:
        return parse(self.expr)


class HallOfFame:
    """The best ``size`` distinct candidates, and the Pareto front of
    (fitness up, complexity down) over everything trained on the full budget."""

    def __init__(self, size: int):
        self.size = size
        self.entries: list[Entry] = []
        self.front: list[Entry] = []

    def update(self, entries: list[Entry]) -> None:
        by_canon = {e.canonical: e for e in self.entries}
        for e in entries:  # a canonical form has one result: keep its first appearance
            by_canon.setdefault(e.canonical, e)
        ranked = sorted(by_canon.values(), key=lambda e: (-e.fitness, e.complexity, e.canonical))
        self.entries = ranked[: self.size]
        pool = {e.canonical: e for e in self.front}
        for e in entries:
            pool.setdefault(e.canonical, e)
        self.front = pareto_front(list(pool.values()))

    def state(self) -> dict:
        return {"entries": [asdict(e) for e in self.entries], "front": [asdict(e) for e in self.front]}

    def load_state(self, state: dict) -> None:
        self.entries = [Entry(**e) for e in state.get("entries", [])]
        self.front = [Entry(**e) for e in state.get("front", [])]

    def to_csv(self, tasks: list[str], which: str = "entries") -> str:
        rows = self.entries if which == "entries" else self.front
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["rank", "expr", "complexity", "fitness", *tasks, "generation", "origin", "canonical",
                    "confirmed", "confirmed_fitness", *[f"confirmed_{t}" for t in tasks],
                    *[f"p_{t}" for t in tasks]])
        for i, e in enumerate(rows, 1):
            conf = e.confirmation or {}
            per = conf.get("tasks", {})
            w.writerow([i, e.expr, e.complexity, f"{e.fitness:.6f}",
                        *[("" if e.scores.get(t) is None else f"{e.scores[t]:.6f}") for t in tasks],
                        e.generation, e.origin, e.canonical,
                        "" if not conf else ("yes" if conf["confirmed"] else "no"),
                        _num(conf.get("fitness")), *[_num(per.get(t, {}).get("mean")) for t in tasks],
                        *[_num(per.get(t, {}).get("p_value"), "{:.4g}") for t in tasks]])
        return buf.getvalue()


def _num(value, fmt: str = "{:.6f}") -> str:
    return "" if value is None else fmt.format(value)


def pareto_front(entries: list[Entry]) -> list[Entry]:
    """Non-dominated entries: no other is at least as fit and at most as complex, and strictly better in one."""
    best_at: dict[int, Entry] = {}
    for e in entries:
        cur = best_at.get(e.complexity)
        if cur is None or (e.fitness, e.canonical) > (cur.fitness, cur.canonical):
            best_at[e.complexity] = e
    front, best = [], float("-inf")
    for c in sorted(best_at):
        e = best_at[c]
        if e.fitness > best:
            front.append(e)
            best = e.fitness
    return front
