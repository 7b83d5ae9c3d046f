"""The strategy protocol: what the engine asks of every search strategy.

A strategy proposes a generation with :meth:`Strategy.ask`, hears back the
results with :meth:`Strategy.tell`, and can be checkpointed with
:meth:`Strategy.state` / :meth:`Strategy.load_state` (plain JSON data, so a
resumed run continues exactly where it stopped).  Optional hooks are declared
here with defaults that do nothing, so a strategy implements only what it
uses and the engine calls every hook without ``hasattr``:

- :meth:`Strategy.set_viability`: the search's cheap filters as a predicate,
  for strategies that can redraw proposals the filters would reject;
- :meth:`Strategy.adopt`: take a proposal with its constants tuned in the
  loop (``constant_variants``) back into the strategy's own encoding;
- :attr:`Strategy.tunable`: whether the hall of fame's constants are worth
  tuning with Optuna after the search (not for a family search, whose
  candidates are already Optuna's proposals).

``tell`` receives, besides (fitness, complexity) per proposal, the per-case
scores (case = ``"task@seed"``, each the log error ratio against the
baseline on that task and seed) for selection methods that look at cases
(lexicase); strategies that do not need them ignore the argument.

GP (tournament, NSGA-II or lexicase selection), aging evolution, random
search and the Optuna family search all implement this protocol.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from lossforge.primitives import Expr

Cases = Mapping[str, float]   # "task@seed" -> score on that case (higher is better)


@dataclass
class Proposal:
    tree: Any           # the strategy's own encoding (a DEAP tree), or None
    expr: Expr | None   # the expression it encodes; None when it is not a valid one
    origin: str


@runtime_checkable
class Strategy(Protocol):
    name: str

    def ask(self) -> list[Proposal]:
        """The next generation's proposals (``config.population`` of them)."""
        ...

    def tell(self, fitnesses: Sequence[tuple[float, int]], cases: Sequence[Cases | None] | None = None) -> None:
        """(fitness, complexity) per proposal of the last ``ask``, in order; ``cases``: per-case scores."""
        ...

    def state(self) -> dict:
        """JSON-serialisable state; ``load_state`` of it continues the run exactly."""
        ...

    def load_state(self, state: dict) -> None:
        ...

    # ---------------------------------------------------------------- optional hooks
    def set_viability(self, viable: Callable[[Expr], bool]) -> None:
        """Screen proposals with the search's cheap filters (default: ignored)."""
        return None

    def adopt(self, index: int, expr: Expr) -> bool:
        """Take ``expr`` (the proposal's constants tuned in the loop) as proposal ``index`` of the last
        ``ask``; False (the default) when the strategy cannot encode it, and then it is not used."""
        return False

    @property
    def tunable(self) -> bool:
        """Whether Optuna constant tuning of the hall of fame applies after this strategy."""
        return True
