"""Search strategies: genetic programming (DEAP) and random search.

Both implement :class:`~lossforge.search.strategy.Strategy` (ask/tell): ``ask()`` returns the next generation's trees (with the
Expr each encodes, or None when a tree is not a valid expression) and
``tell(fitnesses)`` gives back (fitness, complexity) per tree.  Every random
draw goes through the strategy's own RNG state (DEAP uses the global
``random`` module, so it is swapped in around each call), so a run is
reproducible and a checkpointed state resumes exactly.
"""
from __future__ import annotations

import contextlib
import copy
import random
import warnings
from typing import Sequence

from deap import gp, tools

from lossforge.primitives import Expr

from .drawing import (_CLONE_FITNESS, IMMIGRANT_TRIES, PAIR_TRIES, _draw_places, _fits, _Place, _random_option,
                      _Screen, _Stream, _random_trees, uses_both_terminals)
from .drawing import _random_tree  # noqa: F401  (aging evolution's sequential draws)
from .strategy import Cases, Proposal, Strategy
from .trees import (Fitness, Individual, NotRepresentable, deserialise, is_constant, make_constant, make_pset,
                    serialise, sympy_to_tree, tree_to_expr)


def _json_state(state) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _py_state(state) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


@contextlib.contextmanager
def _rng(strategy):
    """Run DEAP's global-random calls on the strategy's own RNG state."""
    outer = random.getstate()
    random.setstate(strategy._rng_state)
    try:
        yield
    finally:
        strategy._rng_state = random.getstate()
        random.setstate(outer)


def _copy(ind) -> Individual:
    """A tree to vary: its nodes (shared, never changed in place) in a new list, with a
    fresh fitness and none of the parent's other attributes.  ``copy.deepcopy`` of a
    DEAP individual costs several times more (fitness objects, lexicase cases) and the
    driver makes several per child."""
    new = Individual.__new__(Individual)
    list.__init__(new, ind)
    fitness = Fitness.__new__(Fitness)
    fitness.wvalues = ()
    new.fitness = fitness
    return new


def _limited(max_height: int, max_size: int):
    """DEAP's ``staticLimit`` for height then size, as one decorator with cheap copies:
    a result over a limit is replaced by a random copy of one of the inputs (the same
    draws as ``staticLimit(size)(staticLimit(height)(op))``)."""
    def decorator(func):
        def wrapper(*args):
            keep = [_copy(ind) for ind in args]
            out = list(func(*args))
            for i, ind in enumerate(out):
                if ind.height > max_height:
                    out[i] = random.choice(keep)
            for i, ind in enumerate(out):
                if len(ind) > max_size:
                    out[i] = random.choice(keep)
            return out
        return wrapper
    return decorator


def _adopt(strategy, ind, expr: Expr) -> bool:
    """Write ``expr`` into ``ind`` in place (Lamarckian constant tuning), within the size limits."""
    try:
        tree = sympy_to_tree(expr.sympy, strategy.pset)
    except NotRepresentable:
        return False
    c = strategy.config
    if tree.height > c.max_height or len(tree) > c.max_size or tree_to_expr(tree) != expr:
        return False
    ind[0:len(ind)] = tree   # in place: the strategy holds this object
    strategy.screen.seen.add(expr.canonical)
    return True


class RandomStrategy(Strategy):
    """Uniformly random trees from the same grammar (ramped half-and-half):
    the baseline every GP result is compared with."""

    name = "random"

    def __init__(self, config, seed: int):
        self.config = config
        self.pset = make_pset(config.primitives, config.constant_range)
        self._rng_state = random.Random(seed).getstate()
        self.population: list[Individual] = []
        self.screen = _Screen()

    def set_viability(self, viable) -> None:
        """Screen proposals with ``viable(expr) -> bool`` (the search's cheap filters)."""
        self.screen.viable = viable

    def ask(self) -> list[Proposal]:
        with _rng(self):
            self.population = _random_trees(self, self.config.population)
        self.screen.remember(self.population)
        return [Proposal(ind, self.screen.expr(ind), "random") for ind in self.population]

    def adopt(self, index: int, expr: Expr) -> bool:
        return _adopt(self, self.population[index], expr)

    def tell(self, fitnesses: Sequence[tuple[float, int]], cases: Sequence[Cases | None] | None = None) -> None:
        for ind, fit in zip(self.population, fitnesses):
            ind.fitness.values = fit

    def state(self) -> dict:
        return {"rng": _json_state(self._rng_state), "seen": sorted(self.screen.seen)}

    def load_state(self, state: dict) -> None:
        self._rng_state = _py_state(state["rng"])
        self.screen.seen = set(state.get("seen", []))


class GPStrategy(Strategy):
    """Tree GP with DEAP: ramped half-and-half initialisation (optionally seeded
    with catalogue losses), tournament selection with complexity as tie-break or
    NSGA-II on (fitness, complexity), or epsilon-lexicase over the cases (task,
    evaluation seed) (:mod:`lossforge.search.lexicase`), subtree crossover, subtree / point / shrink
    / hoist mutation and constant perturbation, static height and size limits,
    elitism."""

    name = "gp"

    def __init__(self, config, seed: int):
        self.config = config
        self.pset = make_pset(config.primitives, config.constant_range)
        self._rng_state = random.Random(seed).getstate()
        self.population: list[Individual] = []
        self.offspring: list[Individual] = []
        self.generation = 0
        self.seed_notes: list[str] = []
        self.screen = _Screen()

        limit = _limited(config.max_height, config.max_size)
        self._crossover = limit(gp.cxOnePoint)
        self._mutations = {
            "subtree": limit(lambda ind: gp.mutUniform(ind, self._subtree, self.pset)),
            "point": limit(lambda ind: gp.mutNodeReplacement(ind, self.pset)),
            "shrink": limit(gp.mutShrink),
            "hoist": limit(self._hoist),
            "constant": limit(self._perturb_constant),
        }

    # -------------------------------------------------------------- operators
    def _subtree(self, pset, type_):
        return gp.genGrow(pset, 0, 2, type_)

    @staticmethod
    def _hoist(ind):
        """Replace the tree by one of its own subtrees (a classic anti-bloat move)."""
        if len(ind) < 3:
            return (ind,)
        index = random.randrange(1, len(ind))
        sub = ind[ind.searchSubtree(index)]
        ind[ind.searchSubtree(0)] = sub
        return (ind,)

    def _perturb_constant(self, ind):
        """Jitter one constant (multiplicative log-normal step, 3 significant digits)."""
        spots = [i for i, node in enumerate(ind) if is_constant(node)]
        if not spots:
            return gp.mutNodeReplacement(ind, self.pset)
        i = random.choice(spots)
        value = float(ind[i].value)
        new = value * (2.0 ** random.gauss(0.0, 0.5)) if value != 0 else random.gauss(0.0, 0.5)
        if random.random() < 0.1:
            new = -new
        ind[i] = make_constant(self.pset, float(f"{new:.3g}"))
        return (ind,)

    def set_viability(self, viable) -> None:
        """Screen new trees with ``viable(expr) -> bool`` (the search's cheap filters):
        initial trees are redrawn and offspring re-varied (a bounded number of
        times) until they pass and are new, so training goes to candidates that
        can learn something."""
        self.screen.viable = viable

    # -------------------------------------------------------------- ask / tell
    def ask(self) -> list[Proposal]:
        with _rng(self):
            if not self.population:
                self.offspring = self._initial()
                origins = ["seed" if getattr(ind, "seeded", False) else "init" for ind in self.offspring]
            else:
                self.offspring, origins = self._vary()
        self.screen.remember(self.offspring)
        return [Proposal(ind, self.screen.expr(ind), origin) for ind, origin in zip(self.offspring, origins)]

    def adopt(self, index: int, expr: Expr) -> bool:
        return _adopt(self, self.offspring[index], expr)

    def tell(self, fitnesses: Sequence[tuple[float, int]], cases: Sequence[Cases | None] | None = None) -> None:
        cases = list(cases) if cases is not None else [None] * len(self.offspring)
        # A second copy of a form already in this generation gets the rejected
        # fitness: it can survive as a slot but is never chosen as a parent, so
        # a converging population does not fill up with clones.
        in_generation: set[str] = set()
        for ind, fit, case in zip(self.offspring, fitnesses, cases):
            e = self.screen.expr(ind)
            key = e.canonical if e is not None else str(ind)
            if key in in_generation:
                fit, case = (min(fit[0], _CLONE_FITNESS), fit[1]), None
            in_generation.add(key)
            ind.fitness.values = fit
            ind.cases = dict(case) if case else {}
        if self.config.selection == "nsga2":
            # (mu + lambda) survival on the two objectives; also assigns the
            # crowding distances that parent selection uses.
            with _rng(self):
                self.population = tools.selNSGA2(self.population + self.offspring, self.config.population)
        else:
            self.population = list(self.offspring)
        self.generation += 1

    def _initial(self) -> list[Individual]:
        c = self.config
        pop: list[Individual] = []
        for name in c.seed_losses:
            from lossforge.losses.lookup import loss_or_expr

            loss = loss_or_expr(name)  # a loss name or an expression
            expr = loss if isinstance(loss, Expr) else loss.expr
            if expr is None:
                self.seed_notes.append(f"seed loss '{name}' has no expression; skipped")
                continue
            try:
                ind = sympy_to_tree(expr.sympy, self.pset)
            except NotRepresentable as exc:
                self.seed_notes.append(f"seed loss '{name}' {exc}; skipped")
                continue
            ind.seeded = True
            pop.append(ind)
        for note in self.seed_notes:
            warnings.warn(note, stacklevel=2)
        pop = pop[: c.population]
        # Ramped half-and-half, screened, without repeating a canonical form.
        self.screen.remember(pop)
        return pop + _random_trees(self, c.population - len(pop))

    def _select_parents(self, k: int) -> list[Individual]:
        c = self.config
        pop = self.population
        if c.selection == "nsga2":
            if len(pop) % 4 == 0 and all(hasattr(i.fitness, "crowding_dist") for i in pop):
                chosen: list[Individual] = []
                while len(chosen) < k:  # binary tournaments on rank, then crowding
                    chosen += tools.selTournamentDCD(pop, len(pop))
                chosen = chosen[:k]
            else:
                chosen = tools.selRandom(pop, k)
        elif c.selection == "lexicase":
            from .lexicase import select

            chosen = [pop[i] for i in select([getattr(i, "cases", None) for i in pop], k)]
        else:
            chosen = tools.selTournament(pop, k, c.tournament_size)
        return [_copy(i) for i in chosen]

    def _vary(self) -> tuple[list[Individual], list[str]]:
        c = self.config
        elites: list[Individual] = []
        if c.selection in ("tournament", "lexicase") and c.elitism:
            elites = [copy.deepcopy(i) for i in tools.selBest(self.population, c.elitism)]
        n_children = c.population - len(elites)
        parents = self._select_parents(n_children + (n_children % 2))
        pairs = []     # (a, b, operation or None for reproduction)
        for i in range(0, len(parents), 2):
            a, b = parents[i], parents[i + 1] if i + 1 < len(parents) else _copy(parents[0])
            r = random.random()
            if r < c.crossover_prob:
                pairs.append((a, b, lambda x, y: [(z, "crossover") for z in self._crossover(x, y)]))
            elif r < c.crossover_prob + c.mutation_prob:
                pairs.append((a, b, self._mutate_pair))
            else:
                pairs.append((a, b, None))
        children = self._retry([p for p in pairs if p[2] is not None])
        out = []
        for a, b, operation in pairs:
            out += children.pop(0) if operation is not None else [(a, "reproduction"), (b, "reproduction")]
        out = out[:n_children]
        for ind, _ in out:
            del ind.fitness.values
        return elites + [ind for ind, _ in out], ["elite"] * len(elites) + [origin for _, origin in out]

    def _mutate_pair(self, x, y):
        out = []
        for ind in (x, y):
            op = random.choice(sorted(self._mutations))
            (ind,) = self._mutations[op](ind)
            out.append((ind, f"mutation:{op}"))
        return out

    def _retry(self, pairs) -> list[list[tuple[Individual, str]]]:
        """Apply each pair's variation; a child that fails the screen (lost ``p`` or
        ``y``, not viable, or a form already proposed, in an earlier generation or
        earlier in this one) is taken from the pair's next variation of the same
        parents, up to 6 in all; a child still missing is a random immigrant that
        passes (a bounded search), else a copy of its parent.  Each pair and each
        immigrant draws from its own seeded stream, so all are screened at once, in
        rounds, on the workers (:func:`~lossforge.search.drawing._draw_places`)."""
        def variation(a, b, operation):
            return lambda: operation(_copy(a), _copy(b))

        def cheap(ind, source):
            return uses_both_terminals(ind) if source == 0 else _fits(self, ind)

        places = []
        for a, b, operation in pairs:
            stream = _Stream(random.getrandbits(64), variation(a, b, operation), PAIR_TRIES)
            for j, parent in enumerate((a, b)):
                immigrants = _Stream(random.getrandbits(64), _random_option(self), IMMIGRANT_TRIES)
                places.append(_Place([(stream, j, PAIR_TRIES, None), (immigrants, 0, IMMIGRANT_TRIES, "immigrant")],
                                     cheap, lambda parent=parent: (_copy(parent), "reproduction")))
        chosen = _draw_places(self.screen, places, self.screen.parallelism)
        return [chosen[k:k + 2] for k in range(0, len(chosen), 2)]

    # -------------------------------------------------------------- state
    def state(self) -> dict:
        return {
            "rng": _json_state(self._rng_state),
            "seen": sorted(self.screen.seen),
            "generation": self.generation,
            "population": [{"tree": serialise(ind), "fitness": list(ind.fitness.values),
                            "crowding": getattr(ind.fitness, "crowding_dist", None),
                            "cases": getattr(ind, "cases", None) or None} for ind in self.population],
        }

    def load_state(self, state: dict) -> None:
        self._rng_state = _py_state(state["rng"])
        self.screen.seen = set(state.get("seen", []))
        self.generation = int(state["generation"])
        self.population = []
        for item in state["population"]:
            ind = deserialise(item["tree"], self.pset)
            if item["fitness"]:
                ind.fitness.values = tuple(item["fitness"])
            if item.get("crowding") is not None:
                ind.fitness.crowding_dist = item["crowding"]
            ind.cases = dict(item.get("cases") or {})
            self.population.append(ind)


def make_strategy(config, seed: int, run_id: str = "run", storage_url: str | None = None) -> Strategy:
    if config.strategy == "aging":
        from .aging import AgingStrategy

        return AgingStrategy(config, seed)
    if config.strategy == "gp":
        return GPStrategy(config, seed)
    if config.strategy == "random":
        return RandomStrategy(config, seed)
    if config.strategy == "family":
        from .families import FamilyStrategy

        return FamilyStrategy(config, seed, run_id=run_id, storage_url=storage_url)
    raise ValueError(f"unknown strategy {config.strategy!r}")
