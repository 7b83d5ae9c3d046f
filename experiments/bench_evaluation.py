"""How fast population-batched evaluation scores candidate losses, against a plain PyTorch loop.

    python experiments/bench_evaluation.py [--quick] [--repeats 3] [--seeds 5]

On ``digits`` with its default budget (MLP 64-64-10, Adam lr 1e-3, 500 steps of
batch 64), one CPU thread.  Prints seconds per candidate for

* the plain loop a user would write (nn.Sequential, Adam, F.cross_entropy),
  one model at a time; and the same loop training each loss of the candidate
  mix through its compiled expression (what scoring candidates one by one costs),
* ``Task.evaluate`` on a realistic mix of candidate losses at K = 1, 16, 64, 256,
* the two population paths at K = 64: the hand-stacked spec layout (the fast
  path for built-in spec models) and the ``torch.func`` path every user
  ``nn.Module`` takes (``--only paths``),
* MNIST-1D with the paper's 1-D CNN (a plain ``nn.Module``): one model at a
  time against the population at K = 16 and 64 (``--only mnist1d``),

the speed-up, a FLOP-bound floor for the same work (FLOPs counted, GFLOP/s of
a large matmul measured on this machine), the accuracy distribution of both
over seeds (mean and sd), and memory per candidate.  Timings are medians of
``--repeats`` runs: the machine's cores are shared, so single runs are noisy.
"""
from __future__ import annotations

import argparse
import copy
import resource
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from lossforge.losses.spaces import per_sample_loss
from lossforge.primitives import parse
from lossforge.tasks import get
from lossforge.tasks.trainer import bytes_per_candidate

# A mix of the kinds of losses a search scores: cross-entropy and its relatives
# (focal, label smoothing, generalised CE, bounded and symmetric variants),
# Brier/MAE-style distances, and a few shapes GP tends to produce.
MIX = [
    "-y*log(p)",
    "-y*(1-p)**2*log(p)",
    "(p-y)**2",
    "abs(p-y)",
    "-(0.9*y + 0.01)*log(p)",
    "y*(1 - p**0.7)/0.7",
    "-y*log(p) + 0.5*(p-y)**2",
    "-y*log(p + 0.01)",
    "exp(-y*p)",
    "-y*log(p)*(1 + p)",
    "-y*log(p) - (1-y)*log(1-p)",
    "(1-y)*p**2 - y*log(p)",
    "-y*log(p) + 0.1*p*log(p)",
    "softplus(3*(p-y))*(p-y)",
    "y*(1-p)",
    "-y*tanh(p)",
]


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def plain_loop(task, seed: int, loss: str | None = None) -> float:
    """One model, trained the ordinary way; returns validation accuracy."""
    torch.manual_seed(seed)
    model = task.model_source.make(seed)  # the task's own model (digits: Linear-ReLU-Linear), one copy
    opt = torch.optim.Adam(model.parameters(), lr=task.lr)
    X, y = torch.tensor(task.X_train), torch.tensor(task.y_train)
    program = parse(loss).compile() if loss is not None else None
    gen = torch.Generator().manual_seed(seed)
    n, b = task.n_train, task.batch_size
    order = torch.randperm(n, generator=gen)
    pos = 0
    for _ in range(task.steps):
        if pos + b > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos:pos + b]
        pos += b
        out = model(X[idx])
        if program is None:
            loss_value = F.cross_entropy(out, y[idx])
        else:
            loss_value = per_sample_loss(program, out, y[idx], "multiclass").mean()
        opt.zero_grad()
        loss_value.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(torch.tensor(task.X_val)).argmax(1)
    return (pred == torch.tensor(task.y_val)).double().mean().item()


def dataloader_loop(task, seed: int) -> float:
    """The same, with the DataLoader most tutorials use; returns validation accuracy."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(seed)
    model = task.model_source.make(seed)
    opt = torch.optim.Adam(model.parameters(), lr=task.lr)
    loader = DataLoader(TensorDataset(torch.tensor(task.X_train), torch.tensor(task.y_train)),
                        batch_size=task.batch_size, shuffle=True, drop_last=True)
    step = 0
    while step < task.steps:
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == task.steps:
                break
    with torch.no_grad():
        pred = model(torch.tensor(task.X_val)).argmax(1)
    return (pred == torch.tensor(task.y_val)).double().mean().item()


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(median_time(lambda: a @ b, 1)[0] for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def flops_per_candidate(task) -> float:
    """FLOPs to train one candidate for the task's budget and score it.

    Forward 2*B*(d*h + h*C) per step; backward needs the weight gradient of
    layer 1 (no input gradient) and both gradients of layer 2.
    """
    d, h, c, b = task.input_dim, task.model_spec.widths[0], task.output_dim, task.batch_size
    per_step = 2 * b * (d * h + h * c) + 2 * b * d * h + 4 * b * h * c
    return task.steps * per_step + 2 * task.n_val * (d * h + h * c)


def without_fast_path(task):
    """The same task trained through the torch.func population (vmap) instead of the stacked spec layout."""
    twin = copy.copy(task)
    twin.fast_path = False
    twin._tensor_cache = {}
    return twin


def paths_section(task, repeats: int, k: int = 64) -> None:
    """Today's hand-stacked spec layout against the torch.func path, same losses, same seed."""
    losses = (MIX * (k // len(MIX) + 1))[:k]
    funcs = without_fast_path(task)
    funcs.evaluate(MIX[:2], steps=5)  # warm up
    t_fast, r_fast = median_time(lambda: task.evaluate(losses, seed=0), repeats)
    t_func, r_func = median_time(lambda: funcs.evaluate(losses, seed=0), repeats)
    same = sum(a.metric == b.metric for a, b in zip(r_fast, r_func))
    print(f"\npopulation paths on {task.name} at K={k} (seconds per candidate, medians of {repeats})")
    print(f"  stacked spec layout (tasks/stacked.py)  {t_fast / k:8.4f} s")
    print(f"  torch.func vmap (tasks/population.py)   {t_func / k:8.4f} s   stacked is x{t_func / t_fast:4.2f} faster;"
          f" {same}/{k} metrics identical, max |diff| "
          f"{max(abs(a.metric - b.metric) for a, b in zip(r_fast, r_func)):.4f}")


def mnist1d_section(repeats: int, ks=(16, 64), steps: int | None = None) -> None:
    """MNIST-1D with the paper's CNN (a plain nn.Module): one model at a time vs the population."""
    task = get("mnist1d")
    steps = steps or task.steps
    if steps != task.steps:
        task = copy.copy(task)
        task.steps, task._tensor_cache = steps, {}
    task.evaluate(MIX[:2], steps=5)
    plain_loop(task, 0)
    t_plain, acc = median_time(lambda: plain_loop(task, 0), repeats)
    print(f"\nmnist1d: {task.describe_model()}, {task.steps} steps x batch {task.batch_size}, adam lr={task.lr:g}")
    print(f"  plain loop, one model at a time        {t_plain:8.3f} s per candidate (CE val accuracy {acc:.3f})")
    for k in ks:
        losses = (MIX * (k // len(MIX) + 1))[:k]
        t, res = median_time(lambda: task.evaluate(losses, seed=0), repeats)
        print(f"  population K={k:<4d}                     {t / k:8.3f} s per candidate   x{t_plain / (t / k):5.1f} vs "
              f"plain; CE val accuracy {res[0].metric:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and seeds, K up to 64")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--only", choices=("digits", "paths", "mnist1d"), default=None,
                    help="run one section: the digits table, stacked vs torch.func paths, or MNIST-1D")
    ap.add_argument("--mnist1d-steps", type=int, default=None, help="override mnist1d's 1000-step budget")
    args = ap.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    n_seeds = args.seeds or (3 if args.quick else 5)
    ks = (1, 16, 64) if args.quick else (1, 16, 64, 256)

    torch.set_num_threads(1)
    task = get("digits")
    if args.only in (None, "paths"):
        paths_section(task, repeats)
    if args.only in (None, "mnist1d"):
        mnist1d_section(1, steps=args.mnist1d_steps)
    if args.only in ("paths", "mnist1d"):
        return
    print(f"digits: {task.describe_model()}, {task.optimizer} lr={task.lr:g}, {task.steps} steps x batch "
          f"{task.batch_size}, {task.n_train} train / {task.n_val} val; torch {torch.__version__}, 1 thread; "
          f"medians of {repeats} run(s)")
    print(f"candidate mix ({len(MIX)} losses, repeated to fill K): {', '.join(MIX[:6])}, ...")
    task.evaluate(MIX[:2], steps=5)  # warm up
    plain_loop(task, 0)

    # Memory first, while the process's peak RSS is still that of the warm-up.
    k = max(ks)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    task.evaluate((MIX * (k // len(MIX) + 1))[:k], seed=0, steps=20)
    grown = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, 0) / k
    memory = (f"memory per candidate: estimate {bytes_per_candidate(task) / 1024:.0f} KiB (used to size "
              f"sub-populations); measured growth of peak RSS at K={k}: {grown:.0f} KiB")

    # ------------------------------------------------------------------ plain loops
    t_plain, _ = median_time(lambda: plain_loop(task, 0), repeats)
    t_loader, _ = median_time(lambda: dataloader_loop(task, 0), repeats)
    mix_times = [median_time(lambda s=s: plain_loop(task, 0, s), 1)[0] for s in MIX[: (4 if args.quick else 8)]]
    t_plain_mix = statistics.median(mix_times)
    print("\nseconds per candidate")
    print(f"  plain loop, F.cross_entropy            {t_plain:8.4f} s   (tensor indexing; the reference below)")
    print(f"  plain loop with a DataLoader           {t_loader:8.4f} s")
    print(f"  plain loop, the mix as expressions     {t_plain_mix:8.4f} s   (median over {len(mix_times)} losses)")

    # ------------------------------------------------------------------ population
    per_k = {}
    for k in ks:
        losses = (MIX * (k // len(MIX) + 1))[:k]
        t, res = median_time(lambda: task.evaluate(losses, seed=0), repeats)
        per_k[k] = t / k
        ok = sum(r.ok for r in res)
        print(f"  population K={k:<4d}                      {t / k:8.4f} s   ({t:6.2f} s per call, {ok}/{k} ok)   "
              f"x{t_plain / (t / k):5.1f} vs plain CE, x{t_plain_mix / (t / k):5.1f} vs plain mix")

    # ------------------------------------------------------------------ floor
    gflops = matmul_gflops()
    flops = flops_per_candidate(task)
    n_params = task.model_spec.n_params(task.input_dim, task.output_dim)
    adam_bytes = task.steps * n_params * 4 * 7  # Adam reads p, g, m, v and writes p, m, v
    print(f"\nFLOP-bound floor: {flops / 1e9:.3f} GFLOP per candidate at {gflops:.0f} GFLOP/s (2048^2 matmul, 1 thread)"
          f" = {flops / gflops / 1e9 * 1e3:.1f} ms per candidate; Adam's memory traffic adds "
          f"{adam_bytes / 1e6:.0f} MB per candidate")
    best_k = min(per_k, key=per_k.get)
    print(f"  best population (K={best_k}) is {per_k[best_k] / (flops / gflops / 1e9):.1f}x the FLOP floor; "
          f"the plain loop is {t_plain / (flops / gflops / 1e9):.0f}x")

    # ------------------------------------------------------------------ accuracy distribution
    seeds = list(range(n_seeds))
    plain_acc = [plain_loop(task, s) for s in seeds]
    pop_acc = []
    for s in seeds:
        res = task.evaluate((MIX * 4)[:64], seed=s)
        pop_acc.append(res[0].metric)  # the cross-entropy candidate, trained among 63 others
    print(f"\nvalidation accuracy of cross-entropy over seeds {seeds}:")
    print(f"  plain loop  {np.mean(plain_acc):.4f} +- {np.std(plain_acc, ddof=1):.4f}   {np.round(plain_acc, 4).tolist()}")
    print(f"  population  {np.mean(pop_acc):.4f} +- {np.std(pop_acc, ddof=1):.4f}   {np.round(pop_acc, 4).tolist()}")
    print("\n" + memory)



if __name__ == "__main__":
    main()
