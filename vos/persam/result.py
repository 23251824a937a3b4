"""Result types of the image engine."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

import numpy as np


@dataclass
class PerSAMResult:
    """One segmented image.

    ``mask``: ``bool H×W``; ``logits``: ``float32 H×W`` high-res logits of the chosen output (mask = logits > 0);
    ``score``: the decoder's predicted IoU of that output; ``points``: ``int N×2`` prompt points ``(x, y)``;
    ``labels``: ``int N`` (1 foreground, 0 background); ``peak``: the highest value of the location confidence map
    (cosine similarity of the target and the best-matching cell); ``trace``: intermediate stages when asked for
    (``segment(..., trace=True)``; names as in the conformance fixtures).
    """

    mask: np.ndarray
    logits: np.ndarray
    score: float
    points: np.ndarray
    labels: np.ndarray
    peak: float
    trace: Dict[str, Any] = field(default_factory=dict)
