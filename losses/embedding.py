"""Metric-learning (embedding) losses: pairs, triplets, batches of labelled embeddings.

Three input conventions, each as its reference implementation takes it:

* pairs ``forward(input1, input2, target)``: embeddings ``[N, D]`` twice and a
  per-pair label ``[N]`` (``contrastive``: 1 similar, 0 dissimilar;
  ``cosine_embedding``: +1 / -1, as ``F.cosine_embedding_loss``);
* triplets ``forward(anchor, positive, negative)``, as ``F.triplet_margin_loss``;
* batches ``forward(embeddings, labels)`` (``nt_xent``, ``arcface``, ``cosface``,
  ``center``: ``[N, D]`` and class indices ``[N]``, as pytorch-metric-learning;
  the last three, with learnable class parameters, are in
  :mod:`lossforge.losses.class_parameter_losses`),
  or two paired views ``forward(query, key)`` with row ``i`` of each a positive
  pair (``info_nce``, ``text_image_matching``).

The unreduced loss is one value per pair, triplet or sample, ``[N]``.
:func:`pairs_from_labels` and :func:`triplets_from_labels` turn a labelled
batch into all its pairs or triplets, so every entry can train on
``(embeddings, labels)``.  None of these is element-wise in ``(p, y)``: no
expression in the grammar.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import LossInputError, LossParameterError
from .loss import CatalogueLoss, check_signed_target, in_range, non_negative, positive, reduce, reference_loss


# ------------------------------------------------------------------ input checks and batch helpers
def check_embedding_batch(embeddings: torch.Tensor, labels: torch.Tensor) -> None:
    if embeddings.dim() != 2:
        raise LossInputError(f"embeddings must be [N, D], got shape {tuple(embeddings.shape)}")
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise LossInputError(f"labels must be [N] = [{embeddings.shape[0]}] class indices for embeddings "
                             f"{tuple(embeddings.shape)}, got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise LossInputError(f"labels must hold integer class indices (torch.long), got dtype {labels.dtype}")


def check_paired(*embeddings: torch.Tensor, names=("input1", "input2", "input3")) -> None:
    first = embeddings[0]
    if first.dim() != 2:
        raise LossInputError(f"{names[0]} must be embeddings [N, D], got shape {tuple(first.shape)}")
    for name, other in zip(names[1:], embeddings[1:]):
        if other.shape != first.shape:
            raise LossInputError(f"{names[0]} {tuple(first.shape)} and {name} {tuple(other.shape)} differ; "
                                 f"row i of each is one pair (or triplet)")


def check_pair_target(input1: torch.Tensor, target: torch.Tensor) -> None:
    if target.shape != input1.shape[:1]:
        raise LossInputError(f"target must be one label per pair, shape {tuple(input1.shape[:1])}, got "
                             f"{tuple(target.shape)}")


def pairs_from_labels(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                                 torch.Tensor]:
    """All pairs ``i < j`` of a labelled batch: ``(x_i, x_j, same)``, ``same`` 1.0 where the labels agree."""
    check_embedding_batch(embeddings, labels)
    i, j = torch.triu_indices(len(labels), len(labels), offset=1, device=labels.device)
    return embeddings[i], embeddings[j], (labels[i] == labels[j]).to(embeddings.dtype)


def triplets_from_labels(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                                    torch.Tensor]:
    """All valid triplets of a labelled batch ("batch all", Hermans et al. 2017): anchor ``a``,
    positive ``p != a`` of the same label, negative ``n`` of another label."""
    check_embedding_batch(embeddings, labels)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    valid = (same & ~eye)[:, :, None] & ~same[:, None, :]
    a, p, n = valid.nonzero(as_tuple=True)
    return embeddings[a], embeddings[p], embeddings[n]


def _distance(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    # sqrt with a floor: finite gradient (zero for the push term) at identical embeddings
    return ((x1 - x2) ** 2).sum(dim=-1).clamp_min(1e-12).sqrt()


# ------------------------------------------------------------------ functional forms
def contrastive_loss(input1: torch.Tensor, input2: torch.Tensor, target: torch.Tensor, margin: float = 1.0,
                     reduction: str = "mean") -> torch.Tensor:
    """Hadsell et al.'s contrastive loss of pairs; see :class:`ContrastiveLoss`."""
    check_paired(input1, input2)
    check_pair_target(input1, target)
    y = target.to(input1.dtype)
    d2 = ((input1 - input2) ** 2).sum(dim=-1)
    return reduce(y * d2 + (1 - y) * F.relu(margin - _distance(input1, input2)) ** 2, reduction)


def cosine_embedding_loss(input1: torch.Tensor, input2: torch.Tensor, target: torch.Tensor, margin: float = 0.0,
                          reduction: str = "mean") -> torch.Tensor:
    """Cosine embedding loss; see :class:`CosineEmbeddingLoss`."""
    check_paired(input1, input2)
    check_pair_target(input1, target)
    check_signed_target(target)
    eps = 1e-12  # as torch: inside the product of the squared norms
    cos = (input1 * input2).sum(-1) / torch.sqrt(((input1**2).sum(-1) + eps) * ((input2**2).sum(-1) + eps))
    return reduce(torch.where(target > 0, 1 - cos, F.relu(cos - margin)), reduction)


def triplet_margin_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 1.0,
                        p: float = 2.0, eps: float = 1e-6, swap: float = 0.0,
                        reduction: str = "mean") -> torch.Tensor:
    """Triplet margin loss; see :class:`TripletMarginLoss`."""
    check_paired(anchor, positive, negative, names=("anchor", "positive", "negative"))
    TripletMarginLoss.check_params(margin=margin, p=p, eps=eps, swap=swap)

    def dist(x, y):  # torch's pairwise_distance: eps is added to the difference
        return torch.linalg.vector_norm(x - y + eps, ord=p, dim=-1)

    d_neg = dist(anchor, negative)
    if swap:
        d_neg = torch.minimum(d_neg, dist(positive, negative))
    return reduce(F.relu(dist(anchor, positive) - d_neg + margin), reduction)


def _cosine_matrix(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    return F.normalize(x1, dim=1) @ F.normalize(x2, dim=1).T


def nt_xent_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07,
                 reduction: str = "mean") -> torch.Tensor:
    """NT-Xent over the positive pairs of a labelled batch; see :class:`NTXentLoss`."""
    check_embedding_batch(embeddings, labels)
    positive("temperature", temperature)
    s = _cosine_matrix(embeddings, embeddings) / temperature
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    # log sum over the anchor's negatives; a finite floor, not -inf, where there is none (no NaN gradient)
    neg_lse = torch.logsumexp(s.masked_fill(same, -1e4), dim=1, keepdim=True)
    per_pair = F.softplus(neg_lse - s)  # -log(e^s_ap / (e^s_ap + sum_n e^s_an))
    count = pos.sum(dim=1)
    per_anchor = (per_pair * pos).sum(dim=1) / count.clamp_min(1)
    return reduce(per_anchor, reduction)


def info_nce_loss(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.1,
                  reduction: str = "mean") -> torch.Tensor:
    """InfoNCE of paired views, the other rows' keys as negatives; see :class:`InfoNCELoss`."""
    check_paired(query, key, names=("query", "key"))
    positive("temperature", temperature)
    s = _cosine_matrix(query, key) / temperature
    return reduce(torch.logsumexp(s, dim=1) - s.diagonal(), reduction)


def text_image_matching_loss(input1: torch.Tensor, input2: torch.Tensor, margin: float = 0.2,
                             reduction: str = "mean") -> torch.Tensor:
    """Bidirectional hinge ranking loss of matched image and text embeddings; see :class:`TextImageMatchingLoss`."""
    check_paired(input1, input2, names=("image embeddings", "text embeddings"))
    n = input1.shape[0]
    if n < 2:
        raise LossInputError("text_image_matching needs at least 2 pairs (the others are the negatives)")
    s = _cosine_matrix(input1, input2)
    pos = s.diagonal()
    off = ~torch.eye(n, dtype=torch.bool, device=s.device)
    image_to_text = F.relu(margin - pos[:, None] + s) * off      # row i: image i against every other text
    text_to_image = F.relu(margin - pos[:, None] + s.T) * off    # row i: text i against every other image
    return reduce((image_to_text + text_to_image).sum(dim=1) / (n - 1), reduction)


# ------------------------------------------------------------------ modules
_RED = "        reduction: ``'none'`` | ``'mean'`` | ``'sum'``. Default: ``'mean'``.\n"
_PAIR_SHAPE = """
    Shape:
        - Input1, Input2: :math:`(N, D)` embeddings, row :math:`i` of each one pair.
        - Target: :math:`(N)` per-pair labels.
        - Output: scalar; :math:`(N)` with ``reduction='none'``.
"""
_BATCH_SHAPE = """
    Shape:
        - Embeddings: :math:`(N, D)`.
        - Labels: :math:`(N)` class indices (``torch.long``).
        - Output: scalar; :math:`(N)` with ``reduction='none'``.
"""


class _PairLoss(CatalogueLoss):
    def forward(self, input1: torch.Tensor, input2: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return type(self).functional(input1, input2, target, **self.params, reduction=self.reduction)


class ContrastiveLoss(_PairLoss):
    __doc__ = r"""Contrastive loss of embedding pairs (Hadsell, Chopra & LeCun 2006).

    With :math:`D = \|x_1 - x_2\|_2` and :math:`y = 1` for a similar pair, 0 for a
    dissimilar one, the unreduced loss is :math:`y D^2 + (1 - y) \max(0, m - D)^2`
    (the review's repository's form: no factor 1/2, 1 means similar).
    pytorch-metric-learning's ``ContrastiveLoss`` is a different (unsquared) loss.

    Args:
        margin: :math:`m`, > 0. Default: 1.
""" + _RED + _PAIR_SHAPE.replace("per-pair labels", "1 (similar) / 0 (dissimilar)")
    defaults = {"margin": 1.0}
    functional = staticmethod(contrastive_loss)

    @classmethod
    def check_params(cls, margin: float) -> None:
        positive("margin", margin)


class CosineEmbeddingLoss(_PairLoss):
    __doc__ = r"""Cosine embedding loss, equal to ``F.cosine_embedding_loss``.

    The unreduced loss is :math:`1 - \cos(x_1, x_2)` for :math:`y = 1` and
    :math:`\max(0, \cos(x_1, x_2) - m)` for :math:`y = -1`.

    Args:
        margin: :math:`m` in [-1, 1]. Default: 0.
""" + _RED + _PAIR_SHAPE.replace("per-pair labels", "+1 / -1 labels")
    defaults = {"margin": 0.0}
    functional = staticmethod(cosine_embedding_loss)

    @classmethod
    def check_params(cls, margin: float) -> None:
        in_range("margin", margin, -1.0, 1.0, closed=True)


class TripletMarginLoss(CatalogueLoss):
    __doc__ = r"""Triplet margin loss (Schroff et al. 2015, FaceNet), equal to ``F.triplet_margin_loss``.

    The unreduced loss is :math:`\max(0, d(a, p) - d(a, n) + m)` with
    :math:`d(x, y) = \|x - y + \epsilon\|_p`; ``swap`` uses
    :math:`\min(d(a, n), d(p, n))` (Balntas et al. 2016).

    Args:
        margin: :math:`m`, >= 0. Default: 1.
        p: the norm degree, > 0. Default: 2.
        eps: added to the differences. Default: 1e-6.
        swap: 1 for the distance swap, 0 without. Default: 0.
""" + _RED + """
    Shape:
        - Anchor, Positive, Negative: :math:`(N, D)`.
        - Output: scalar; :math:`(N)` with ``reduction='none'``.
"""
    defaults = {"margin": 1.0, "p": 2.0, "eps": 1e-6, "swap": 0.0}
    functional = staticmethod(triplet_margin_loss)

    @classmethod
    def check_params(cls, margin: float, p: float, eps: float, swap: float) -> None:
        non_negative("margin", margin)
        positive("p", p)
        non_negative("eps", eps)
        if swap not in (0.0, 1.0):
            raise LossParameterError(f"swap is a switch: 0 (off) or 1 (on), got {swap}")

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        return triplet_margin_loss(anchor, positive, negative, **self.params, reduction=self.reduction)


class NTXentLoss(CatalogueLoss):
    __doc__ = r"""NT-Xent / InfoNCE over the labelled pairs of a batch (Chen et al. 2020, SimCLR;
    Oord et al. 2018), as pytorch-metric-learning's ``NTXentLoss``.

    With cosine similarities :math:`s` and temperature :math:`\tau`, each positive
    pair :math:`(a, p)` (same label, :math:`p \ne a`) loses
    :math:`-\log \frac{e^{s_{ap}/\tau}}{e^{s_{ap}/\tau} + \sum_{n} e^{s_{an}/\tau}}` over the
    anchor's negatives :math:`n` (other labels).  The unreduced loss of sample
    :math:`a` is the mean over its positive pairs (0 without one); pytorch-metric-
    learning averages over all positive pairs, the same value when every label
    appears equally often in the batch (two views per sample, as SimCLR).

    Args:
        temperature: :math:`\tau`, > 0. Default: 0.07.
""" + _RED + _BATCH_SHAPE
    defaults = {"temperature": 0.07}
    functional = staticmethod(nt_xent_loss)

    @classmethod
    def check_params(cls, temperature: float) -> None:
        positive("temperature", temperature)


class InfoNCELoss(CatalogueLoss):
    __doc__ = r"""InfoNCE of paired views (Oord et al. 2018, CPC; He et al. 2020, MoCo).

    Row :math:`i` of ``query`` and ``key`` is a positive pair, the other rows' keys
    its negatives: :math:`\ell_i = -\log \frac{e^{s_{ii}/\tau}}{\sum_j e^{s_{ij}/\tau}}` with
    cosine similarities :math:`s`, equal to pytorch-metric-learning's
    ``NTXentLoss(temperature)(query, labels, ref_emb=key, ref_labels=labels)`` for distinct labels.

    Args:
        temperature: :math:`\tau`, > 0. Default: 0.1.
""" + _RED + """
    Shape:
        - Query, Key: :math:`(N, D)`, row :math:`i` of each a positive pair.
        - Output: scalar; :math:`(N)` with ``reduction='none'``.
"""
    defaults = {"temperature": 0.1}
    functional = staticmethod(info_nce_loss)
    check_params = NTXentLoss.check_params


class TextImageMatchingLoss(CatalogueLoss):
    __doc__ = r"""Bidirectional hinge ranking loss of matched image and text embeddings
    (Kiros et al. 2014; the review's ``text_image_matching_loss.py``).

    With cosine similarities :math:`s(I, T)` and margin :math:`m`, pair :math:`i` loses
    :math:`\frac{1}{N - 1} \sum_{j \ne i} [\max(0, m - s(I_i, T_i) + s(I_i, T_j))`
    :math:`+ \max(0, m - s(I_i, T_i) + s(I_j, T_i))]`;
    ``'mean'`` is the repository's value.

    Args:
        margin: :math:`m`, >= 0. Default: 0.2.
""" + _RED + r"""
    Shape:
        - Image embeddings, text embeddings: :math:`(N, D)`, :math:`N \ge 2`, row :math:`i` of each matched.
        - Output: scalar; :math:`(N)` with ``reduction='none'``.
"""
    defaults = {"margin": 0.2}
    functional = staticmethod(text_image_matching_loss)

    @classmethod
    def check_params(cls, margin: float) -> None:
        non_negative("margin", margin)


_EMB = dict(family="metric", task_kinds=("embeddings",),
            notes="reference-only: distances between embeddings, not element-wise in (p, y)")

ENTRIES = [
    reference_loss("contrastive", formula="y*D**2 + (1 - y)*max(0, margin - D)**2, D = ||x1 - x2||, y = 1 similar",
                   module=ContrastiveLoss, input="embedding_pairs", target="binary",
                   reference="Hadsell, Chopra & LeCun, Dimensionality Reduction by Learning an Invariant "
                   "Mapping, CVPR 2006", **_EMB),
    reference_loss("cosine_embedding", formula="1 - cos(x1, x2) if y = 1, max(0, cos(x1, x2) - margin) if y = -1",
                   module=CosineEmbeddingLoss, input="embedding_pairs", target="signed",
                   reference="torch.nn.CosineEmbeddingLoss", **_EMB),
    reference_loss("triplet", formula="max(0, d(a, p) - d(a, n) + margin), d(x, y) = ||x - y + eps||_p",
                   module=TripletMarginLoss, input="embedding_triplets", target="embeddings",
                   reference="Schroff, Kalenichenko & Philbin, FaceNet, CVPR 2015; torch.nn.TripletMarginLoss",
                   **_EMB),
    reference_loss("nt_xent", formula="mean over positives p of -log(e^(s_ap/t)/(e^(s_ap/t) + sum_n e^(s_an/t))), "
                   "s = cosine", module=NTXentLoss, input="embeddings", target="index",
                   reference="Chen et al., A Simple Framework for Contrastive Learning (SimCLR), ICML 2020; "
                   "pytorch_metric_learning.losses.NTXentLoss", **_EMB),
    reference_loss("info_nce", formula="-log(e^(s_ii/t)/sum_j e^(s_ij/t)), s = cosine(query_i, key_j)",
                   module=InfoNCELoss, input="embeddings", target="embeddings",
                   reference="van den Oord, Li & Vinyals, Representation Learning with Contrastive Predictive "
                   "Coding, arXiv 1807.03748", **_EMB),
    reference_loss("text_image_matching", formula="sum_{j != i} [max(0, m - s(I_i,T_i) + s(I_i,T_j)) + "
                   "max(0, m - s(I_i,T_i) + s(I_j,T_i))]/(N - 1)", module=TextImageMatchingLoss,
                   input="embeddings", target="embeddings",
                   reference="Kiros, Salakhutdinov & Zemel, Unifying Visual-Semantic Embeddings, arXiv 1411.2539; "
                   "the review's text_image_matching_loss.py (margin 0.2)", **_EMB),
]
