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
from collections import OrderedDict
import copy
import operator
import random
import warnings
from typing import Sequence

from deap import gp, tools

from lossforge.primitives import Expr

from .strategy import Cases, Proposal, Strategy
from .trees import (Individual, NotRepresentable, deserialise, is_constant, make_constant, make_pset, serialise,
                    sympy_to_tree, tree_to_expr)


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


_TRIES = 200
_EXPR_CACHE = 4096
_CLONE_FITNESS = -100.0   # as a rejected candidate (search.fitness.REJECTED_FITNESS)


def uses_both_terminals(ind) -> bool:
    """Cheap structural check: the tree reads both the prediction and the target
    (a tree without one of them is rejected by the filters anyway)."""
    names = {node.value for node in ind if isinstance(node, gp.Terminal) and isinstance(node.value, str)}
    return {"p", "y"} <= names


class _Screen:
    """Cheap screening of proposals before they reach the evaluator.

    A tree must read ``p`` and ``y``; with a ``viable`` predicate (the search's
    filters without the training: constant, non-finite, wrong gradient, direct
    check) it must also pass that, and with ``novel`` its canonical form must
    not have been proposed before.  Conversions are cached by the tree's text
    (an LRU); verdicts are cached by the filter that gives them.  Everything
    here is deterministic, so a resumed search replays the same draws.
    """

    def __init__(self):
        self.viable = None            # Callable[[Expr], bool] | None, set by the engine
        self.seen: set[str] = set()   # canonical forms proposed so far
        self._exprs: OrderedDict[str, Expr | None] = OrderedDict()  # LRU of tree text -> Expr

    def expr(self, ind) -> Expr | None:
        key = str(ind)
        if key in self._exprs:
            self._exprs.move_to_end(key)
            return self._exprs[key]
        e = self._exprs[key] = tree_to_expr(ind)
        if len(self._exprs) > _EXPR_CACHE:  # bounded: driver memory must not grow with generations
            self._exprs.popitem(last=False)
        return e

    def ok(self, ind, novel: bool = True) -> bool:
        if not uses_both_terminals(ind):
            return False
        if self.viable is None and not novel:
            return True
        e = self.expr(ind)
        if e is None:
            return False
        if novel and e.canonical in self.seen:
            return False
        return self.viable is None or bool(self.viable(e))

    def remember(self, inds) -> None:
        for ind in inds:
            e = self.expr(ind)
            if e is not None:
                self.seen.add(e.canonical)


def _random_tree(strategy, novel: bool = True, tries: int = _TRIES) -> Individual:
    """Ramped half-and-half, redrawn (bounded) until it fits the size limits
    and passes the screen (reads ``p`` and ``y``; viable and new where the
    engine asks for it); after ``tries`` draws the last one is returned."""
    c = strategy.config
    ind = None
    for _ in range(tries):
        ind = Individual(gp.genHalfAndHalf(strategy.pset, max(c.init_min_depth, 1), c.init_max_depth))
        if ind.height <= c.max_height and len(ind) <= c.max_size and strategy.screen.ok(ind, novel):
            return ind
    return ind


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
            self.population = []
            for _ in range(self.config.population):
                ind = _random_tree(self)
                self.screen.remember([ind])
                self.population.append(ind)
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

        limit_h = gp.staticLimit(key=operator.attrgetter("height"), max_value=config.max_height)
        limit_s = gp.staticLimit(key=len, max_value=config.max_size)
        self._crossover = limit_s(limit_h(gp.cxOnePoint))
        self._mutations = {
            "subtree": limit_s(limit_h(lambda ind: gp.mutUniform(ind, self._subtree, self.pset))),
            "point": limit_s(limit_h(lambda ind: gp.mutNodeReplacement(ind, self.pset))),
            "shrink": limit_s(limit_h(gp.mutShrink)),
            "hoist": limit_s(limit_h(self._hoist)),
            "constant": limit_s(limit_h(self._perturb_constant)),
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
        while len(pop) < c.population:
            ind = _random_tree(self)
            self.screen.remember([ind])
            pop.append(ind)
        return pop

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
        return [copy.deepcopy(i) for i in chosen]

    def _vary(self) -> tuple[list[Individual], list[str]]:
        c = self.config
        elites: list[Individual] = []
        if c.selection in ("tournament", "lexicase") and c.elitism:
            elites = [copy.deepcopy(i) for i in tools.selBest(self.population, c.elitism)]
        n_children = c.population - len(elites)
        parents = self._select_parents(n_children + (n_children % 2))
        children, origins = [], []
        for i in range(0, len(parents), 2):
            a, b = parents[i], parents[i + 1] if i + 1 < len(parents) else copy.deepcopy(parents[0])
            r = random.random()
            if r < c.crossover_prob:
                pair = self._retry(lambda x, y: [(z, "crossover") for z in self._crossover(x, y)], a, b)
            elif r < c.crossover_prob + c.mutation_prob:
                def mutate(x, y):
                    out = []
                    for ind in (x, y):
                        op = random.choice(sorted(self._mutations))
                        (ind,) = self._mutations[op](ind)
                        out.append((ind, f"mutation:{op}"))
                    return out
                pair = self._retry(mutate, a, b)
            else:
                pair = [(a, "reproduction"), (b, "reproduction")]
            for ind, origin in pair:
                del ind.fitness.values
                children.append(ind)
                origins.append(origin)
        children, origins = children[:n_children], origins[:n_children]
        return elites + children, ["elite"] * len(elites) + origins

    def _retry(self, operation, a, b, tries: int = 6):
        """Apply a variation; a child that fails the screen (lost ``p`` or
        ``y``, not viable, or a form already proposed) is redrawn from its
        parents, a few times; a child still failing is replaced by a random
        immigrant that passes (a bounded search), else by a copy of its parent."""
        out = []
        for _ in range(tries):
            out = operation(copy.deepcopy(a), copy.deepcopy(b))
            if all(self.screen.ok(ind) for ind, _ in out):
                return out
        fixed = []
        for (child, origin), parent in zip(out, (a, b)):
            if not self.screen.ok(child):
                immigrant = _random_tree(self, tries=100)
                if self.screen.ok(immigrant):
                    child, origin = immigrant, "immigrant"
                else:
                    child, origin = copy.deepcopy(parent), "reproduction"
            fixed.append((child, origin))
        return fixed

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
