"""The reference catalogue: every hand-written loss, collected from the modules that define them."""
from __future__ import annotations

from functools import lru_cache

from .loss import Loss


@lru_cache(maxsize=1)
def reference_losses() -> tuple[Loss, ...]:
    """All reference entries, in catalogue order (built once, on first use)."""
    from . import (binary, boxes, class_parameter_losses, classification, classification_extra, embedding,
                   generative, glo, image, noisy_labels, probabilistic, regression, robust, segmentation)

    modules = (regression, robust, probabilistic, binary, classification, noisy_labels, glo, segmentation,
               classification_extra, boxes, embedding, class_parameter_losses, image, generative)
    return tuple(entry for module in modules for entry in module.ENTRIES)
