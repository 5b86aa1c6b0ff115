"""Reading the engines' lateness and duration histograms (Python side)."""

from __future__ import annotations

from typing import Iterable

import numpy as np


def histogram_percentiles(counts: np.ndarray, quantiles: Iterable[float]) -> list[int]:
    """The bin index at each quantile of *counts* (a histogram the native side fills; 0 when empty)."""
    counts = counts.copy()  # (the native side may be adding to it)
    total = int(counts.sum())
    cumulative = np.cumsum(counts)
    return [int(np.searchsorted(cumulative, q * total)) if total else 0 for q in quantiles]
