"""How long parse + canonicalise + compile take for GP-sized expressions.

    python experiments/bench_grammar.py [--n 1000] [--depth 6] [--seed 0]

Prints the median, 90th/99th percentile and the worst case, for random trees
drawn from the primitive table (the same rows the GP uses), and for a few
adversarial expressions whose expansion the size budget must cut off.
Target: median under 5 ms; the worst case bounded by the budget.
"""
from __future__ import annotations

import argparse
import sympy
import random
import statistics
import time

from lossforge.primitives import parse
from lossforge.primitives.generate import random_expression

ADVERSARIAL = [
    "(p + y + 1)**6 * (p - y + 2)**6 * (log(p) + y + 3)**6",
    "((p + y)**6 + (p - y)**6)**6",
    "exp((p + y + 1)**6) * log((p - y + 2)**6) * sigmoid((p*y + p + y + 1)**6)",
    "+".join(f"(p + {i})**6" for i in range(40)),
]


def time_one(text: str) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    e = parse(text)
    t1 = time.perf_counter()
    e.canonical
    t2 = time.perf_counter()
    e.compile()
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    # leaf_prob 0.15 grows bushy trees like a GP population's (10-60 nodes).
    exprs = [random_expression(rng, max_depth=rng.randint(3, args.depth), leaf_prob=0.15) for _ in range(args.n)]
    texts = [str(e) for e in exprs]
    sizes = [len(t) for t in texts]
    nodes = [sum(1 for _ in sympy.preorder_traversal(e.sympy)) for e in exprs]
    parse("p")  # warm imports
    rows = [time_one(t) for t in texts]
    total = [sum(r) * 1e3 for r in rows]
    q = statistics.quantiles(total, n=100)
    print(f"{args.n} random expressions, depth 3..{args.depth}: text length median {statistics.median(sizes):.0f} "
          f"(max {max(sizes)}) characters, sympy nodes median {statistics.median(nodes):.0f} (max {max(nodes)})")
    for name, col in (("parse", 0), ("canonicalise", 1), ("compile", 2)):
        vals = [r[col] * 1e3 for r in rows]
        print(f"  {name:13s} median {statistics.median(vals):7.3f} ms   p99 {statistics.quantiles(vals, n=100)[98]:7.3f} ms"
              f"   max {max(vals):7.3f} ms")
    print(f"  {'total':13s} median {statistics.median(total):7.3f} ms   p90 {q[89]:7.3f} ms   p99 {q[98]:7.3f} ms"
          f"   max {max(total):7.3f} ms")
    print(f"  target median < 5 ms: {'met' if statistics.median(total) < 5 else 'NOT met'}")
    print("adversarial expansions (the term budget must cut these off):")
    for text in ADVERSARIAL:
        t = sum(time_one(text)) * 1e3
        print(f"  {t:8.2f} ms  canonical length {len(parse(text).canonical):4d}  {text[:60]}")


if __name__ == "__main__":
    main()
