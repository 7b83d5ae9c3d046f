"""Regularised (aging) evolution, as in AutoML-Zero and the Lion optimiser search.

Real, Aggarwal, Huang & Le, "Regularized Evolution for Image Classifier
Architecture Search" (AAAI 2019); Real et al., "AutoML-Zero" (ICML 2020);
Chen et al., "Symbolic Discovery of Optimization Algorithms" (Lion, 2023).

The strategy keeps a large population (``aging_population``, default four
generations' worth) ordered by age.  Each generation it breeds
``population`` children: every child comes from a tournament of
``tournament_size`` members drawn at random from the living population (the
youngest ``aging_population``: the oldest are removed as children are added,
whatever their fitness), mutated once by one of GP's mutation operators.
No crossover and no elitism: removal by age, not by fitness, is the
regularisation that keeps the search from settling on one old lucky winner.
Novelty memory: a child whose canonical form was proposed before (the
strategy's screen) is re-mutated, and fingerprint duplicates are caught by the
search's filters, so the budget goes to new candidates.  Generation 0 is the
same screened random (or seeded) population as GP's.
"""
from __future__ import annotations

import copy
import random
from typing import Sequence

from .strategies import _CLONE_FITNESS, GPStrategy, Proposal, _py_state, _json_state, _random_tree, _rng
from .strategy import Cases
from .trees import deserialise, serialise


class AgingStrategy(GPStrategy):
    name = "aging"

    def __init__(self, config, seed: int):
        super().__init__(config, seed)
        self.alive: list = []   # oldest first
        self.capacity = int(getattr(config, "aging_population", None) or 4 * config.population)

    def ask(self) -> list[Proposal]:
        with _rng(self):
            if not self.alive and self.generation == 0:
                self.offspring = self._initial()
                origins = ["seed" if getattr(ind, "seeded", False) else "init" for ind in self.offspring]
            else:
                self.offspring, origins = [], []
                for _ in range(self.config.population):
                    child, origin = self._child()
                    self.screen.remember([child])
                    self.offspring.append(child)
                    origins.append(origin)
        self.screen.remember(self.offspring)
        return [Proposal(ind, self.screen.expr(ind), origin) for ind, origin in zip(self.offspring, origins)]

    def _child(self):
        """A tournament on the living population, then one mutation (re-drawn a few times until new)."""
        k = min(self.config.tournament_size, len(self.alive))
        if k == 0:
            return _random_tree(self), "immigrant"
        parent = max(random.sample(self.alive, k), key=lambda ind: ind.fitness)
        for _ in range(6):
            op = random.choice(sorted(self._mutations))
            (child,) = self._mutations[op](copy.deepcopy(parent))
            if self.screen.ok(child):
                del child.fitness.values
                return child, f"mutation:{op}"
        immigrant = _random_tree(self, tries=100)
        return immigrant, "immigrant"

    def tell(self, fitnesses: Sequence[tuple[float, int]], cases: Sequence[Cases | None] | None = None) -> None:
        seen_now: set[str] = set()
        for ind, fit in zip(self.offspring, fitnesses):
            e = self.screen.expr(ind)
            key = e.canonical if e is not None else str(ind)
            ind.fitness.values = fit
            # Rejected candidates and second copies within a generation do not take a place.
            if key in seen_now or fit[0] <= _CLONE_FITNESS:
                continue
            seen_now.add(key)
            self.alive.append(ind)
        del self.alive[: max(0, len(self.alive) - self.capacity)]   # the oldest die
        self.population = list(self.alive)
        self.generation += 1

    def state(self) -> dict:
        return {
            "rng": _json_state(self._rng_state),
            "seen": sorted(self.screen.seen),
            "generation": self.generation,
            "alive": [{"tree": serialise(ind), "fitness": list(ind.fitness.values)} for ind in self.alive],
        }

    def load_state(self, state: dict) -> None:
        self._rng_state = _py_state(state["rng"])
        self.screen.seen = set(state.get("seen", []))
        self.generation = int(state["generation"])
        self.alive = []
        for item in state["alive"]:
            ind = deserialise(item["tree"], self.pset)
            ind.fitness.values = tuple(item["fitness"])
            self.alive.append(ind)
        self.population = list(self.alive)
