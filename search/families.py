"""Parameterised loss families searched with Optuna (a strategy of its own).

``taylor``: TaylorGLO's third-order Taylor polynomial in (p, y) with 8
parameters (Gonzalez & Miikkulainen, "Optimizing Loss Functions Through
Multi-Variate Taylor Polynomial Parameterization", GECCO 2021);
``poly``: Poly-N, cross-entropy plus N weighted powers of (1 - p_t) (Leng et
al., "PolyLoss", ICLR 2022); ``focal``: focal loss with a searched gamma
(Lin et al., 2017).  Each family is an expression with tunable constants
c0..ck and a range for each; Optuna proposes values, the usual scorer trains
and scores them, and Optuna is told the fitness.
"""
from __future__ import annotations

from dataclasses import dataclass

import optuna

from lossforge.primitives import Expr, GrammarError, parse

from .optuna_util import completed, make_sampler, open_study, take_running, tell_fitness
from .strategy import Proposal, Strategy


@dataclass(frozen=True)
class Family:
    name: str
    template: str
    ranges: dict[str, tuple[float, float]]
    reference: str

    def expression(self) -> Expr:
        return parse(self.template)

    def distributions(self) -> dict:
        return {k: optuna.distributions.FloatDistribution(lo, hi) for k, (lo, hi) in self.ranges.items()}


def family(name: str, n_params: int | None = None) -> Family:
    if name == "taylor":
        x, yy = "(p - c1)", "(y - c0)"
        template = (f"-(c2*{x} + c3*{x}**2/2 + c4*{x}**3/6 + c5*{x}*{yy} + c6*{x}*{yy}**2/2 + c7*{x}**2*{yy}/2)")
        ranges = {f"c{i}": (-5.0, 5.0) for i in range(8)}
        ranges["c0"] = ranges["c1"] = (-1.0, 2.0)
        return Family("taylor", template, ranges, "Gonzalez & Miikkulainen, GECCO 2021 (TaylorGLO)")
    if name == "poly":
        n = n_params or 3
        if not 1 <= n <= 6:
            raise GrammarError(f"poly family takes 1..6 terms, got {n}")
        terms = " + ".join(f"c{j - 1}*y*(1 - p)**{j}" for j in range(1, n + 1))
        return Family("poly", f"-y*log(p) + {terms}", {f"c{j}": (-1.0, 5.0) for j in range(n)},
                      "Leng et al., PolyLoss, ICLR 2022")
    if name == "focal":
        return Family("focal", "-y*(1 - p)**c0*log(p)", {"c0": (0.0, 5.0)}, "Lin et al., Focal loss, ICCV 2017")
    raise GrammarError(f"unknown family '{name}'; use taylor, poly or focal")


class FamilyStrategy(Strategy):
    """Optuna proposes a generation of parameter vectors; ask/tell like GP."""

    name = "family"
    tunable = False   # its candidates are Optuna's proposals already

    def __init__(self, config, seed: int, run_id: str = "run", storage_url: str | None = None):
        self.config = config
        self.seed = seed
        self.family = family(config.family, config.family_params)
        self.template = self.family.expression()
        self.study_name = f"{run_id}-family-{self.family.name}"
        self.storage_url = storage_url
        self.generation = 0
        self._trials: list = []
        self._study = None

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            self._study = open_study(self.study_name, self.storage_url or "sqlite:///:memory:",
                                     make_sampler(self.config.sampler, self.seed))
        return self._study

    def ask(self) -> list[Proposal]:
        study = self.study
        study.sampler = make_sampler(self.config.sampler, self.seed + 7919 * (self.generation + 1),
                                     n_startup=min(8, self.config.population))
        dists = self.family.distributions()
        self._trials = (take_running(study, self.config.population)
                        or [study.ask(dists) for _ in range(self.config.population)])
        out = []
        for t in self._trials:
            try:
                expr = self.template.bind({k: round(v, 4) for k, v in t.params.items()})
            except GrammarError:
                expr = None
            out.append(Proposal(None, expr, f"family:{self.family.name}"))
        return out

    def tell(self, fitnesses, cases=None) -> None:
        for trial, (fit, _complexity) in zip(self._trials, fitnesses):
            tell_fitness(self.study, trial, fit)
        self._trials = []
        self.generation += 1

    def state(self) -> dict:
        return {"generation": self.generation, "completed": len(completed(self.study))}

    def load_state(self, state: dict) -> None:
        self.generation = int(state["generation"])
