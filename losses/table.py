"""The catalogue as a readable text table (``lossforge catalogue``).

Entries are grouped by input convention (what the module's ``forward`` takes)
and, within one, by family.  The ``search`` column says whether the grammar can
search the loss today (``grammar``: an element-wise expression in ``(p, y)``)
or whether it is reference-only (``ref-only``: a module, for ``compare`` and as code).
Each entry is one line of name, kind, search and parameters, then its formula
indented below, wrapped so that no line is wider than ``width`` columns.
"""
from __future__ import annotations

import textwrap

from lossforge.primitives import did_you_mean

from .loss import CONVENTIONS
from .registry import CatalogueError, select

CONVENTION_TITLES = {
    "p, y": "p, y: a prediction and a target per sample (logits, probabilities or values)",
    "boxes": "boxes: paired boxes [N, 4] as (x1, y1, x2, y2)",
    "embeddings": "embeddings: pairs, triplets, paired views, or a batch [N, D] with labels",
    "images": "images: image batches [N, C, H, W] or feature maps",
    "generative": "generative: discriminator scores, latent (mu, logvar), reconstructions, predicted noise",
}
CONVENTION_ORDER = tuple(CONVENTION_TITLES)


def _params_text(params) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in params.items()) or "-"


def _convention_of(loss) -> str:
    return CONVENTIONS.get(loss.input, "p, y")


def catalogue_table(kind: str | None = None, family: str | None = None, convention: str | None = None,
                    width: int = 100) -> str:
    """Every loss of this kind, family and input convention, grouped by convention and family."""
    if convention is not None and convention not in CONVENTION_ORDER:
        raise CatalogueError(f"unknown input convention {convention!r}{did_you_mean(str(convention), CONVENTION_ORDER)}"
                             f"; use one of {', '.join(CONVENTION_ORDER)}")
    losses = [loss for loss in select(kind, family) if convention is None or _convention_of(loss) == convention]
    if not losses:
        what = " ".join(x for x in (kind, convention) if x)
        return f"no {what + ' ' if what else ''}losses{f' in family {family}' if family else ''}"
    name_w = max(len(loss.name) for loss in losses)
    kind_w = max(len(loss.kind) for loss in losses)
    lead = name_w + kind_w + 9 + 6
    params_w = max(width - lead, 20)

    def row(name: str, kind_text: str, search: str, params: str) -> list[str]:
        head = f"{name.ljust(name_w)}  {kind_text.ljust(kind_w)}  {search.ljust(9)}  "
        chunks = textwrap.wrap(params, params_w, break_on_hyphens=False) or ["-"]
        return [head + chunks[0]] + [" " * lead + c for c in chunks[1:]]

    out = row("name", "kind", "search", "params          (formula: the indented line below)")
    for conv in CONVENTION_ORDER:
        group = [loss for loss in losses if _convention_of(loss) == conv]
        if not group:
            continue
        out += ["", f"== {CONVENTION_TITLES[conv]} =="]
        families = list(dict.fromkeys(loss.family for loss in group))
        for fam in families:
            members = [loss for loss in group if loss.family == fam]
            out.append(f"-- {fam} ({len(members)}) --")
            for loss in members:
                out += row(loss.name, loss.kind, "grammar" if loss.expr is not None else "ref-only",
                           _params_text(loss.params))
                out += textwrap.wrap(loss.formula, width, initial_indent="    ", subsequent_indent="      ",
                                     break_on_hyphens=False)
    searchable = sum(loss.expr is not None for loss in losses)
    out += ["", f"{len(losses)} losses: {searchable} searchable by the grammar (an element-wise expression in p, y), "
                f"{len(losses) - searchable} reference-only (modules: lossforge compare, export as code)"]
    return "\n".join(textwrap.fill(line, width, subsequent_indent="  ") if len(line) > width else line
                     for line in out)
