"""The validity band: percentiles of log p(x) on held-out valid rows.

A row is valid when ``lower <= log p(x) <= upper``. Both sides are on purpose:
likelihood models can give some out-of-distribution inputs (blank images,
constant rows) *higher* likelihood than real data. Either side may be None.
"""

from __future__ import annotations

import numpy as np


def band_from_scores(scores, percentiles):
    """Thresholds ``(lower, upper)`` at the given percentiles of ``scores``.

    Parameters
    ----------
    scores : ndarray of shape (n_samples,)
        log p(x) of valid rows, nats.
    percentiles : tuple of (float or None, float or None)
        Percentiles in [0, 100]; None drops that side.

    Returns
    -------
    tuple of (float or None, float or None)
    """
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        raise ValueError("the band needs at least one validation row")
    return tuple(None if p is None else float(np.percentile(scores, p)) for p in percentiles)


def signed_distance(scores, thresholds):
    """Distance of each score to the nearest edge of the band, > 0 inside (nats)."""
    lower, upper = thresholds
    distance = np.full(np.shape(scores), np.inf)
    if lower is not None:
        distance = np.minimum(distance, scores - lower)
    if upper is not None:
        distance = np.minimum(distance, upper - scores)
    return distance


def validate_percentiles(percentiles):
    """Check a ``threshold_percentiles`` value; return it as a tuple."""
    try:
        lower, upper = percentiles
    except (TypeError, ValueError):
        raise ValueError(
            f"threshold_percentiles must be a pair (lower, upper), got {percentiles!r}"
        ) from None
    for side in (lower, upper):
        if side is not None and not 0 <= side <= 100:
            raise ValueError(f"threshold_percentiles must lie in [0, 100] or be None, got {percentiles!r}")
    if lower is None and upper is None:
        raise ValueError("threshold_percentiles needs at least one side, got (None, None)")
    if lower is not None and upper is not None and lower >= upper:
        raise ValueError(f"threshold_percentiles needs lower < upper, got {percentiles!r}")
    return (lower, upper)
