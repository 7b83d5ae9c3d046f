"""All candidate losses of a population in one schedule: the population program.

Evaluating K compiled :class:`~lossforge.primitives.compile.Program` objects one
after the other costs K x (instructions) small torch operations per training
step, forward and backward, and on a CPU that per-operation overhead, not the
arithmetic, dominates (about 15 ms per step for 64 random GP candidates).

Here the K instruction lists are merged into one straight-line schedule:
identical nodes are shared (hash-consing: ``1 - y`` is computed once for all
candidates), and nodes with the same opcode whose arguments are ready are run
as one *group*, a single torch call on a ``[n, ...]`` stack of rows (64
candidates of a realistic 16-loss mix: 282 nodes in 20 groups, about 1.2 ms
per step where the Programs one by one take about 14 ms).  All values
live in one preallocated table ``V[row, ...]``; a group gathers its arguments
with one ``index_select`` per argument position (or a slice, when they are
contiguous) and writes its result rows in place.

Gradients are computed in forward mode alongside the values.  A loss
expression is elementwise, ``L_i = L(p_i, y_i)``, so ``dL_i/dp_i`` is the
tangent of the output when the tangent of ``p`` is 1: each group also
computes its rows of a tangent table ``D`` from its arguments' tangents
(the row's ``derivative``, the chain rule of its opcode written to match
torch's own derivative conventions for the protected forms:
:mod:`lossforge.primitives.derivatives`).
No autograd graph is built for the loss: :func:`with_derivatives` attaches
the values to ``p`` with a one-node backward ``grad * D``.  Rows with no written rule (user
primitives, unless they bring one) get their tangent from torch autograd.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

import torch

from lossforge.primitives.compile import Program
from lossforge.primitives.derivatives import autograd_rule
from lossforge.primitives.table import get_primitive


# ----------------------------------------------------------------------------- rules
def _resolve(opcode: str, payload) -> tuple[Callable, Callable]:
    """(value function, value-and-tangent rule) of one opcode, from its row.

    The rule is the row's ``derivative`` (the convention of
    :mod:`lossforge.primitives.derivatives`) or, for a row without one, torch
    autograd.  A constant payload (pow's exponent) is the row's last argument.
    """
    row = get_primitive(opcode)
    if payload is None:
        return row.torch, row.derivative or autograd_rule(row.torch)
    fn, constant = row.torch, float(payload)

    def value(*args):
        return fn(*args, constant)

    return value, (row.derivative(constant) if row.derivative else autograd_rule(value))


# ----------------------------------------------------------------------------- schedule
def _schedule(keys: Sequence[tuple], deps: Sequence[Sequence[int]]) -> list[list[int]]:
    """Partition DAG nodes into groups of equal key, in an executable order.

    List scheduling: among the nodes whose dependencies are done, run next the
    key whose remaining nodes are most completely ready (a key all of whose
    nodes are ready is run at once and never split again), ties to the larger
    ready set.  Fewer groups means fewer torch calls per training step.
    """
    n = len(keys)
    waiting = [len(d) for d in deps]
    users = defaultdict(list)
    for j, d in enumerate(deps):
        for a in d:
            users[a].append(j)
    remaining: dict[tuple, int] = defaultdict(int)
    for k in keys:
        remaining[k] += 1
    ready: dict[tuple, list[int]] = defaultdict(list)
    for j in range(n):
        if waiting[j] == 0:
            ready[keys[j]].append(j)
    groups = []
    while ready:
        key = max(ready, key=lambda k: (len(ready[k]) / remaining[k], len(ready[k]), str(k)))
        members = ready.pop(key)
        remaining[key] -= len(members)
        groups.append(members)
        for j in members:
            for u in users[j]:
                waiting[u] -= 1
                if waiting[u] == 0:
                    ready[keys[u]].append(u)
    return groups


class _Group:
    __slots__ = ("opcode", "payload", "value", "rule", "start", "stop", "args", "needs_tangent",
                 "arg_tangent")

    def __init__(self, opcode, payload, start, stop, args, needs_tangent, arg_tangent):
        self.opcode, self.payload = opcode, payload
        self.value, self.rule = _resolve(opcode, payload)
        self.start, self.stop = start, stop
        self.args = args  # per position: ("slice", a, b) | ("row", r) | ("index", LongTensor)
        self.needs_tangent = needs_tangent
        self.arg_tangent = arg_tangent  # per position: any member's argument depends on p


class PopulationProgram:
    """K programs merged into one grouped, forward-mode schedule.

    ``evaluate(p, y)`` takes ``p`` of shape ``[K, *S]`` (candidate k's
    predictions in row k) and ``y`` of shape ``S`` (shared targets) and returns
    ``(values, dvalues_dp)``, both ``[K, *S]``.
    """

    def __init__(self, programs: Sequence[Program]):
        self.programs = tuple(programs)
        k = len(self.programs)
        if k == 0:
            raise ValueError("PopulationProgram needs at least one program")
        # Nodes: 0..k-1 are the candidates' p, k is y, then constants, then ops.
        self._const_rows: dict[str, int] = {}
        self._constants: list[float] = []
        nodes: list[tuple] = []  # op nodes: (opcode, payload, arg node ids)
        node_of: dict[tuple, int] = {}
        depends: list[bool] = [True] * k + [False]

        def const_node(value: float) -> int:
            key = float(value).hex()
            if key not in self._const_rows:
                self._constants.append(float(value))
                self._const_rows[key] = -len(self._constants)  # renumbered below
            return self._const_rows[key]

        def op_node(opcode, payload, args) -> int:
            key = (opcode, payload, tuple(args))
            if key not in node_of:
                node_of[key] = len(nodes)
                nodes.append(key)
                depends_op.append(any(dep(a) for a in args))
            return ("op", node_of[key])

        depends_op: list[bool] = []

        def dep(ref) -> bool:
            if isinstance(ref, tuple):
                return depends_op[ref[1]]
            return ref >= 0 and depends[ref]

        outputs = []
        for i, prog in enumerate(self.programs):
            slots: list = [i, k] + [const_node(c) for c in prog.constants]
            for opcode, args, payload in prog.instructions:
                refs = [slots[a] for a in args]
                if opcode in ("add", "mul") and len(refs) > 2:
                    acc = refs[0]
                    for r in refs[1:]:  # the left fold Program uses (functools.reduce)
                        acc = op_node(opcode, None, (acc, r))
                    slots.append(acc)
                else:
                    slots.append(op_node(opcode, payload, tuple(refs)))
            outputs.append(slots[prog.output])

        # Leaf rows: p (0..k-1), y (k), constants (k+1..).
        n_const = len(self._constants)
        self.n_candidates = k
        self._first_op_row = k + 1 + n_const

        def leaf_row(ref) -> int:
            return ref if ref >= 0 else k + 1 + (-ref - 1)

        n_ops = len(nodes)
        keys = [(nodes[j][0], nodes[j][1], depends_op[j]) for j in range(n_ops)]
        deps = [sorted({a[1] for a in nodes[j][2] if isinstance(a, tuple)}) for j in range(n_ops)]
        pending_groups = [(keys[members[0]], members) for members in _schedule(keys, deps)]
        row_of_op = [-1] * n_ops
        next_row = self._first_op_row
        self._groups: list[_Group] = []

        def row(ref) -> int:
            return row_of_op[ref[1]] if isinstance(ref, tuple) else leaf_row(ref)

        for (opcode, payload, needs_tangent), members in pending_groups:
            # Order members by their argument rows so gathers are often slices.
            members = sorted(members, key=lambda j: tuple(row(a) for a in nodes[j][2]))
            start = next_row
            for j in members:
                row_of_op[j] = next_row
                next_row += 1
            arity = len(nodes[members[0]][2])
            args, arg_tangent = [], []
            for pos in range(arity):
                rows = [row(nodes[j][2][pos]) for j in members]
                arg_tangent.append(any(dep(nodes[j][2][pos]) for j in members))
                if len(members) > 1 and all(r == rows[0] for r in rows):
                    args.append(("row", rows[0]))
                elif rows == list(range(rows[0], rows[0] + len(rows))):
                    args.append(("slice", rows[0], rows[0] + len(rows)))
                else:
                    args.append(("index", torch.tensor(rows, dtype=torch.long)))
            self._groups.append(_Group(opcode, payload, start, next_row, args, needs_tangent, arg_tangent))

        self.n_rows = next_row
        self._output_rows = torch.tensor([row(o) for o in outputs], dtype=torch.long)
        self._output_depends = [dep(o) for o in outputs]
        self._table_key = None
        self._device_index: dict = {}

    # ------------------------------------------------------------------ info
    @property
    def n_groups(self) -> int:
        return len(self._groups)

    @property
    def n_nodes(self) -> int:
        return self.n_rows - self._first_op_row

    def table_bytes(self, row_numel: int, element_size: int = 4) -> int:
        """Memory of the value and tangent tables for rows of ``row_numel`` elements."""
        return 2 * self.n_rows * row_numel * element_size

    # ------------------------------------------------------------------ run
    def _tables(self, shape, dtype, device):
        key = (tuple(shape), dtype, torch.device(device))
        if self._table_key != key:
            V = torch.empty((self.n_rows, *shape), dtype=dtype, device=device)
            D = torch.zeros((self.n_rows, *shape), dtype=dtype, device=device)
            D[: self.n_candidates] = 1
            for i, c in enumerate(self._constants):
                V[self.n_candidates + 1 + i] = c
            self._V, self._D, self._table_key = V, D, key
            self._zero = torch.zeros((), dtype=dtype, device=device)
            self._device_index = {}
        return self._V, self._D

    def _index(self, t: torch.Tensor, device) -> torch.Tensor:
        key = id(t)
        got = self._device_index.get(key)
        if got is None:
            got = self._device_index[key] = t.to(device)
        return got

    def _gather(self, table, spec, device):
        if spec[0] == "slice":
            return table[spec[1]:spec[2]]
        if spec[0] == "row":
            return table[spec[1]]
        return table.index_select(0, self._index(spec[1], device))

    def evaluate(self, p: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values and d(value)/dp of every candidate's loss, elementwise: ``[K, *S]`` each."""
        k = self.n_candidates
        if p.shape[0] != k:
            raise ValueError(f"p has {p.shape[0]} rows for {k} programs")
        shape = p.shape[1:]
        if tuple(y.shape) != tuple(shape):
            y = y.expand(shape)
        device = p.device
        with torch.no_grad():
            V, D = self._tables(shape, p.dtype, device)
            V[:k].copy_(p)
            V[k].copy_(y)
            zero = self._zero
            for g in self._groups:
                args = [self._gather(V, a, device) for a in g.args]
                ov = V[g.start:g.stop]
                if g.needs_tangent:
                    tans = [self._gather(D, a, device) if need else None for a, need in zip(g.args, g.arg_tangent)]
                    g.rule(*args, *tans, ov, D[g.start:g.stop], zero)
                else:
                    ov.copy_(g.value(*args))
            rows = self._index(self._output_rows, device)
            return V.index_select(0, rows), D.index_select(0, rows)


class _WithDerivatives(torch.autograd.Function):
    """Values whose derivative w.r.t. ``p`` is known elementwise: backward is ``grad * D``.

    Rows (candidates) where ``keep`` is False get a zero gradient, even where
    ``D`` is not finite: ``keep`` may be filled in after this call, before backward.
    """

    @staticmethod
    def forward(ctx, p, values, derivatives, keep):
        ctx.save_for_backward(derivatives)
        ctx.keep = keep  # not saved for backward: it is meant to change before backward runs
        return values

    @staticmethod
    def backward(ctx, grad):
        (derivatives,) = ctx.saved_tensors
        keep = ctx.keep
        g = grad * derivatives
        if keep is not None:
            shape = (-1,) + (1,) * (g.dim() - 1)
            g = torch.where(keep.view(shape), g, torch.zeros((), dtype=g.dtype, device=g.device))
        return g, None, None, None


def with_derivatives(p: torch.Tensor, values: torch.Tensor, derivatives: torch.Tensor,
                     keep: torch.Tensor | None = None) -> torch.Tensor:
    """``values`` made differentiable w.r.t. ``p`` through the elementwise ``derivatives``."""
    return _WithDerivatives.apply(p, values, derivatives, keep)


def population_loss(program: PopulationProgram, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Elementwise losses ``[K, *S]`` of all candidates, differentiable w.r.t. ``p``."""
    values, derivatives = program.evaluate(p.detach(), y.detach())
    return with_derivatives(p, values, derivatives)
