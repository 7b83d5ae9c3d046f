"""The catalogue as a readable text table (``lossforge catalogue``)."""
from __future__ import annotations

from .registry import select


def _params_text(params) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in params.items()) or "-"


def catalogue_table(kind: str | None = None, family: str | None = None) -> str:
    """One row per loss: name, kind, family, expression?, parameters and formula."""
    losses = select(kind, family)
    if not losses:
        return f"no {kind or ''} losses{f' in family {family}' if family else ''}".replace("  ", " ")
    header = ("name", "kind", "family", "expr", "params", "formula")
    rows = [(l.name, l.kind, l.family, "yes" if l.expr is not None else "-", _params_text(l.params), l.formula)
            for l in losses]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header) - 1)]

    def line(r) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]

    out = [line(header), line(tuple("-" * w for w in widths) + ("-" * 7,))]
    out += [line(r) for r in rows]
    with_expr = sum(l.expr is not None for l in losses)
    out.append(f"\n{len(losses)} losses, {with_expr} with an expression in the grammar")
    return "\n".join(out)
