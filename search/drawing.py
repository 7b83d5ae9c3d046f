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

import random
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

    @property
    def parallelism(self) -> int:
        return self.screener.parallelism if self.screener is not None else 1

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


# How many candidates a place of the generation may try: a pair's variation 6 times,
# then an immigrant 100 times; a random tree 200 times.
PAIR_TRIES, IMMIGRANT_TRIES, RANDOM_TRIES = 6, 100, _TRIES


class _Stream:
    """Options drawn lazily from one place's own RNG (seeded from the strategy's): the
    k-th option is the same whenever, and in whatever order, it is drawn.

    The draws use the ``random`` module (DEAP does), so drawing means swapping the
    module's state for the stream's and back, which costs more than drawing a random
    tree (about 30 against 12 microseconds).  A stream that is asked for more options
    draws ahead -- as many again as it has, at most ``AHEAD`` more and never past
    ``limit`` -- so a place that needs many (a random tree reads both p and y about
    one time in five) swaps a few times instead of once an option."""

    AHEAD = 16

    def __init__(self, seed: int, draw, limit: int | None = None):
        self.state = random.Random(seed).getstate()
        self.draw = draw
        self.limit = limit
        self.items: list = []

    def get(self, k: int):
        if len(self.items) <= k:
            have = len(self.items)
            upto = max(k + 1, min(2 * have, have + self.AHEAD))
            if self.limit is not None:
                upto = max(k + 1, min(upto, self.limit))
            outer = random.getstate()
            random.setstate(self.state)
            try:
                while len(self.items) < upto:
                    self.items.append(self.draw())
            finally:
                self.state = random.getstate()
                random.setstate(outer)
        return self.items[k]


class _Place:
    """One tree of the generation being drawn: its candidates are, in order, position
    ``j`` of the first ``n`` options of each source stream; ``cheap(tree, source)``
    are the checks done before screening; ``fallback()`` the tree used when no
    candidate passes."""

    def __init__(self, sources, cheap, fallback):
        self.sources = sources            # [(stream, j, n, origin or None: the option's own)]
        self.total = sum(n for _, _, n, _ in sources)
        self.cheap = cheap
        self.fallback = fallback
        # The candidates that pass the cheap checks, in order, found lazily: a round of
        # _draw_places looks at them again without redoing the checks (tree heights, the
        # p-and-y scan) on the candidates before them.
        self._passing: list[tuple] = []   # (tree, origin)
        self._checked = 0                 # candidates looked at so far
        # Leading entries of _passing that can never be picked (invalid, not viable or proposed
        # in an earlier generation): a later round starts after them.
        self.skip = 0

    def passing(self, m: int):
        """The ``m``-th candidate that passes the cheap checks as (tree, origin), or None."""
        while len(self._passing) <= m and self._checked < self.total:
            tree, origin, si = self.candidate(self._checked)
            self._checked += 1
            if self.cheap(tree, si):
                self._passing.append((tree, origin))
        return self._passing[m] if m < len(self._passing) else None

    def candidate(self, k: int):
        for si, (stream, j, n, origin) in enumerate(self.sources):
            if k < n:
                tree, own = stream.get(k)[j]
                return tree, origin or own, si
            k -= n
        raise IndexError(k)


def _draw_places(screen: _Screen, places: list[_Place], parallelism: int = 1) -> list[tuple]:
    """The (tree, origin) of every place: the first candidate that passes the screen
    and is new -- against earlier generations and the places before it in this one.

    That is the sequential definition; it is computed in rounds, each screening a
    batch of candidates at once (on the workers when there is a screener), with
    more candidates per open place as rounds go on (and enough to give every worker
    a share).  Since every place draws from its own stream, what each place gets
    does not depend on the rounds, on the number of workers or on the order in
    which screening finished: only on the strategy's RNG and the screen."""
    results: dict = {}      # id(tree) -> Screened (trees stay alive in their streams)
    rnd = 0
    while True:
        taken: set[str] = set()
        chosen: list = []
        # (place index, index of its first unscreened candidate among those that pass the cheap checks)
        wanted: list = []
        for i, place in enumerate(places):
            pick = None
            m = place.skip
            while (option := place.passing(m)) is not None:
                tree, origin = option
                res = results.get(id(tree))
                if res is None:
                    wanted.append((i, m))
                    break
                if screen.passes(res, taken):
                    pick = (tree, origin)
                    taken.add(res.canonical)
                    break
                if m == place.skip and not screen.passes(res):
                    place.skip += 1   # fails whatever the other places take
                m += 1
            else:
                pick = place.fallback()
            chosen.append(pick)
        if not wanted:
            return chosen
        quota = max(2 ** rnd, -(-8 * parallelism // len(wanted)))
        batch = []
        for i, m in wanted:
            place, got = places[i], 0
            while got < quota and (option := place.passing(m)) is not None:
                if id(option[0]) not in results:
                    batch.append(option[0])
                    got += 1
                m += 1
        for tree, res in zip(batch, screen.many(batch)):
            results[id(tree)] = res
        rnd += 1


def _random_option(strategy):
    c = strategy.config

    def draw():
        return [(Individual(gp.genHalfAndHalf(strategy.pset, max(c.init_min_depth, 1), c.init_max_depth)), "init")]
    return draw


def _fits(strategy, ind) -> bool:
    c = strategy.config
    return ind.height <= c.max_height and len(ind) <= c.max_size and uses_both_terminals(ind)


def _random_place(strategy, origin: str | None = None) -> _Place:
    stream = _Stream(random.getrandbits(64), _random_option(strategy), RANDOM_TRIES)
    # no candidate passes: the last draw, as the sequential screen did
    return _Place([(stream, 0, RANDOM_TRIES, origin)], lambda ind, _si: _fits(strategy, ind),
                  lambda: stream.get(RANDOM_TRIES - 1)[0])


def _random_trees(strategy, n: int) -> list[Individual]:
    """``n`` screened ramped half-and-half trees, new and distinct."""
    places = [_random_place(strategy) for _ in range(n)]
    return [tree for tree, _ in _draw_places(strategy.screen, places, strategy.screen.parallelism)]


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
