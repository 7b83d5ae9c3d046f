"""Drawing a generation's trees through the screen, for the tree strategies.

:class:`_Screen` decides whether a tree may be proposed (reads ``p`` and
``y``; viable under the search's cheap filters; a canonical form not proposed
before).  :func:`_fill` fills the places ("slots") of a generation in
deterministic rounds, screening each round's draws in one batch -- on the
evaluator's workers when the engine gave a
:class:`~lossforge.search.screening.Screener` -- so a run does not depend on
the number of workers.  :func:`_random_tree` is the sequential form (one tree,
screened here), kept for strategies that draw one child at a time.
"""
from __future__ import annotations

from collections import OrderedDict

from deap import gp

from lossforge.primitives import Expr

from .screening import Screened, Screener
from .trees import Individual, tree_to_expr

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
    not have been proposed before.  When ``viable`` is a
    :class:`~lossforge.search.screening.Screener` (the engine's), the work is
    done in batches on the evaluator's workers (:meth:`many`) and cached by
    tree there; otherwise here, with conversions cached by the tree's text (an
    LRU).  Everything here is deterministic, so a resumed search replays the
    same draws.
    """

    def __init__(self):
        self.viable = None            # Callable[[Expr], bool] | Screener | None, set by the engine
        self.seen: set[str] = set()   # canonical forms proposed so far
        self._exprs: OrderedDict[str, Expr | None] = OrderedDict()  # LRU of tree text -> Expr

    @property
    def screener(self) -> Screener | None:
        return self.viable if isinstance(self.viable, Screener) else None

    def expr(self, ind) -> Expr | None:
        if self.screener is not None:
            return self.screener.expr(ind)
        key = str(ind)
        if key in self._exprs:
            self._exprs.move_to_end(key)
            return self._exprs[key]
        e = self._exprs[key] = tree_to_expr(ind)
        if len(self._exprs) > _EXPR_CACHE:  # bounded: driver memory must not grow with generations
            self._exprs.popitem(last=False)
        return e

    def many(self, inds) -> list[Screened]:
        """Screen a batch of trees (on the workers when there is a screener), in order."""
        if self.screener is not None:
            return self.screener.screen(inds)
        out = []
        for ind in inds:
            e = self.expr(ind)
            if e is None:
                out.append(Screened(None))
            else:
                passes = self.viable is None or bool(self.viable(e))
                out.append(Screened(str(e), e.canonical, e.complexity, None if passes else ("rejected", "")))
        return out

    def passes(self, result: Screened | None, taken: set[str] = frozenset()) -> bool:
        """A screened tree is usable: a valid expression, viable (where screening is on) and new."""
        if result is None or result.text is None:
            return False
        if self.viable is not None and result.reject is not None:
            return False
        return result.canonical not in self.seen and result.canonical not in taken

    def ok(self, ind, novel: bool = True) -> bool:
        if not uses_both_terminals(ind):
            return False
        if self.viable is None and not novel:
            return True
        if self.screener is not None:
            r = self.screener.screen([ind], remote=False)[0]
            return r.text is not None and r.reject is None and not (novel and r.canonical in self.seen)
        e = self.expr(ind)
        if e is None:
            return False
        if novel and e.canonical in self.seen:
            return False
        return self.viable is None or bool(self.viable(e))

    def remember(self, inds) -> None:
        for r in self.many(inds):
            if r.text is not None:
                self.seen.add(r.canonical)


# Draws per round for a slot of a generation (see _fill): the totals are the tries of the
# sequential screen (a pair's variation 6, an immigrant 100, a random tree 200); rounds
# grow so that a slot that fails often costs few round trips and one that passes wastes little.
_PAIR_ROUNDS = (2, 4)
_IMMIGRANT_ROUNDS = (2, 6, 12, 24, 56)
_RANDOM_ROUNDS = (2, 6, 12, 24, 48, 108)


class _Slot:
    """One place of a generation being filled: ``draw()`` gives an option (a list of
    (tree, origin): one tree, or the two children of one variation), ``rounds`` how
    many options to draw in each round, ``cheap(tree)`` the checks done before
    screening.  ``chosen[j]``: the (tree, origin) kept for position j of the option."""

    def __init__(self, draw, rounds, cheap, width: int = 1):
        self.draw, self.rounds, self.cheap = draw, rounds, cheap
        self.chosen: list = [None] * width
        self.last = None

    @property
    def filled(self) -> bool:
        return all(c is not None for c in self.chosen)


def _fill(screen: _Screen, slots: list[_Slot], taken: set[str], results: dict) -> None:
    """Fill ``slots`` in deterministic rounds.  Each round draws every open slot's
    options (in slot order, from the strategy's RNG) and screens, all at once (on
    the workers when there is a screener), the trees of the positions still open;
    then, slot by slot and position by position in order, keeps the first tree that
    passes and is new (against earlier generations and the forms already ``taken``
    in this one).  What is drawn depends only on earlier rounds' verdicts, never on
    how many workers screened them or in what order they finished.  ``results``
    collects id(tree) -> (Screened, tree)."""
    open_ = list(range(len(slots)))
    r = 0
    while open_:
        drawn = {}
        for i in open_:
            drawn[i] = [slots[i].draw() for _ in range(slots[i].rounds[r])]
            slots[i].last = drawn[i][-1]
        trees = [opt[j][0] for i in open_ for opt in drawn[i] for j, c in enumerate(slots[i].chosen)
                 if c is None and slots[i].cheap(opt[j][0])]
        for ind, res in zip(trees, screen.many(trees)):
            results[id(ind)] = (res, ind)   # the tree is held, so its id is not reused while results lives
        for i in open_:
            slot = slots[i]
            for j, c in enumerate(slot.chosen):
                if c is not None:
                    continue
                for opt in drawn[i]:
                    res = results.get(id(opt[j][0]), (None,))[0]
                    if screen.passes(res, taken):
                        slot.chosen[j] = opt[j]
                        taken.add(res.canonical)
                        break
        r += 1
        open_ = [i for i in open_ if not slots[i].filled and r < len(slots[i].rounds)]


def _random_slot(strategy, rounds=_RANDOM_ROUNDS) -> _Slot:
    c = strategy.config

    def draw():
        return [(Individual(gp.genHalfAndHalf(strategy.pset, max(c.init_min_depth, 1), c.init_max_depth)), "init")]

    def cheap(ind):
        return ind.height <= c.max_height and len(ind) <= c.max_size and uses_both_terminals(ind)

    return _Slot(draw, rounds, cheap)


def _random_trees(strategy, n: int, taken: set[str]) -> list[Individual]:
    """``n`` screened ramped half-and-half trees, new and distinct (a slot that finds
    none in its draws keeps its last draw, as the sequential screen did)."""
    slots = [_random_slot(strategy) for _ in range(n)]
    _fill(strategy.screen, slots, taken, {})
    return [(s.chosen[0] or s.last[0])[0] for s in slots]


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
