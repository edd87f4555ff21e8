"""The validity band: percentiles of log p(x) on held-out valid rows.

A row is valid when ``lower <= log p(x) <= upper``. Both sides are on purpose:
likelihood models can give some out-of-distribution inputs (blank images,
constant rows) *higher* likelihood than real data. Either side may be None.
"""

from __future__ import annotations

import warnings

import numpy as np

#: Fewer calibration rows than this give a warning: a percentile p estimated
#: from n rows is known only to about +-sqrt(p(1 - p) / n) in probability (at
#: n = 30 and p = 0.25, +-8 points), and with one or two rows the band has
#: (almost) zero width and rejects nearly every row.
MIN_CALIBRATION_ROWS = 30


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

    Warns
    -----
    UserWarning
        With fewer than :data:`MIN_CALIBRATION_ROWS` scores (see
        :func:`check_calibration_size`).
    """
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        raise ValueError("the band needs at least one validation row")
    check_calibration_size(scores.size, percentiles)
    return tuple(None if p is None else float(np.percentile(scores, p)) for p in percentiles)


def n_set_aside(n_rows, fraction):
    """Rows that a ``trim_fraction`` share sets aside of ``n_rows``: floor(fraction * n_rows), never all."""
    return min(int(np.floor(fraction * n_rows)), max(n_rows - 1, 0))


def exclude_lowest(scores, fraction):
    """Split calibration scores into the kept rows and the ``fraction`` with the lowest log p(x).

    With training data that may hold a few bad rows (``trim_fraction``), the
    calibration rows may too, and the likeliest of them are those with the
    lowest scores: left in, they pull a lower edge down by as many
    percentiles as they are rows.

    Parameters
    ----------
    scores : ndarray of shape (n_samples,)
        log p(x) of the calibration rows.
    fraction : float or None
        Share in [0, 0.5) to exclude; None or 0 excludes none.

    Returns
    -------
    kept, excluded : ndarrays of int
        Ascending positions in ``scores``; ties broken by position.
    """
    scores = np.asarray(scores, dtype=float)
    n_drop = n_set_aside(scores.size, fraction or 0.0)
    order = np.argsort(scores, kind="stable")
    return np.sort(order[n_drop:]), np.sort(order[:n_drop])


def percentile_standard_error(p, n):
    """Standard error, in probability, of the p-th percentile (p in [0, 100]) of n rows: sqrt(p(1-p)/n)."""
    q = p / 100.0
    return float(np.sqrt(q * (1.0 - q) / n))


def check_calibration_size(n, percentiles):
    """Warn when n calibration rows are too few for the band's percentiles.

    The warning names n, each side's standard error sqrt(p(1-p)/n) and the
    rows needed for +-5 points (p(1-p)/0.05^2: 75 rows at p=25, 4 at p=1).
    """
    if n >= MIN_CALIBRATION_ROWS:
        return
    sides = [p for p in percentiles if p is not None]
    errors = ", ".join(f"the {p:g}th percentile +-{percentile_standard_error(p, n):.0%}" for p in sides)
    needed = max(int(np.ceil((p / 100) * (1 - p / 100) / 0.05**2)) for p in sides) if sides else MIN_CALIBRATION_ROWS
    warnings.warn(
        f"the band is calibrated on only {n} row(s): {errors} (standard error sqrt(p(1-p)/n)); "
        f"use at least {max(MIN_CALIBRATION_ROWS, needed)} calibration rows for +-5 points "
        f"(more training rows, a larger validation_fraction, or calibrate() on more valid rows)",
        UserWarning,
        stacklevel=3,
    )


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
