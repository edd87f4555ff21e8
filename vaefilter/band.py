"""The validity band and conformal p-values of log p(x) against held-out valid rows.

A row is valid when ``lower <= log p(x) <= upper``. Both sides are on purpose:
likelihood models can give some out-of-distribution inputs (blank images,
constant rows) *higher* likelihood than real data. Either side may be None.

The calibration rows' scores also give each new row a conformal p-value (its
rank among them, :func:`conformal_pvalues`), a band with a requested
false-rejection rate (:func:`conformal_band`), the uncertainty of a band's
edges from the order statistics (:func:`edge_rejection_intervals`) and the
Benjamini-Hochberg cut of a batch (:func:`benjamini_hochberg`). All of them are
exact in finite samples when the calibration rows and the new valid rows are
exchangeable (drawn alike, the calibration rows never used to fit the model).
"""

from __future__ import annotations

from numbers import Real

import math
import warnings

import numpy as np
from scipy import stats

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
        f"(more training rows, a larger calibration_fraction, or calibrate() on more valid rows)",
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
        if side is not None and (isinstance(side, bool) or not isinstance(side, Real)):
            raise ValueError(f"threshold_percentiles must be numbers in [0, 100] or None, got {percentiles!r}")
        if side is not None and not 0 <= side <= 100:
            raise ValueError(f"threshold_percentiles must lie in [0, 100] or be None, got {percentiles!r}")
    if lower is None and upper is None:
        raise ValueError("threshold_percentiles needs at least one side, got (None, None)")
    if lower is not None and upper is not None and lower >= upper:
        raise ValueError(f"threshold_percentiles needs lower < upper, got {percentiles!r}")
    return (lower, upper)


# ------------------------------------------------------- conformal p-values
def band_tail(thresholds):
    """The tail a band tests: 'lower', 'upper' or 'two-sided' (from which sides are not None)."""
    lower, upper = thresholds
    if lower is not None and upper is not None:
        return "two-sided"
    return "lower" if lower is not None else "upper"


def conformal_pvalues(scores, calibration, tail="lower"):
    """Conformal p-value of each score against the calibration scores.

    With n calibration scores c, the lower-tail p-value of a score s is
    ``(1 + #{c <= s}) / (n + 1)`` (small for unusually *low* log p(x)), the
    upper-tail one ``(1 + #{c >= s}) / (n + 1)``, the two-sided one
    ``min(1, 2 min(p_lower, p_upper))``.

    Parameters
    ----------
    scores : array-like of shape (n_samples,)
        log p(x) of the rows to test, nats. NaN (a row that could not be
        scored) gives NaN.
    calibration : array-like of shape (n_calibration,)
        log p(x) of valid rows the model was not fitted on.
    tail : {'lower', 'upper', 'two-sided'}, default='lower'
        Which scores count as extreme (see :func:`band_tail`).

    Returns
    -------
    pvalues : ndarray of shape (n_samples,)
        In [1/(n+1), 1].

    Notes
    -----
    Valid in finite samples: if a row and the n calibration rows are
    exchangeable (the same distribution, the model fitted without any of
    them), then ``P(p <= alpha) <= alpha`` for every alpha, and ``P(p <= alpha)
    = floor(alpha (n + 1)) / (n + 1)`` when scores do not tie. The guarantee is
    marginal (over the draw of the calibration rows too); for one fixed
    calibration set the rate varies, see :func:`edge_rejection_intervals`.
    It breaks when the calibration rows took part in fitting (their scores are
    then optimistic and the p-values of new valid rows too small), when new
    rows drift from the calibration rows, or after ``calibrate()`` on rows
    seen in training.
    """
    scores = np.asarray(scores, dtype=float)
    ordered = np.sort(np.asarray(calibration, dtype=float))
    n = ordered.size
    if n == 0:
        raise ValueError("conformal p-values need at least one calibration score")
    if tail not in ("lower", "upper", "two-sided"):
        raise ValueError(f"tail must be 'lower', 'upper' or 'two-sided', got {tail!r}")
    at_or_below = np.searchsorted(ordered, scores, side="right")
    at_or_above = n - np.searchsorted(ordered, scores, side="left")
    p_lower = (1.0 + at_or_below) / (n + 1.0)
    p_upper = (1.0 + at_or_above) / (n + 1.0)
    if tail == "lower":
        p = p_lower
    elif tail == "upper":
        p = p_upper
    else:
        p = np.minimum(1.0, 2.0 * np.minimum(p_lower, p_upper))
    return np.where(np.isnan(scores), np.nan, p)


def band_pvalues(scores, calibration, thresholds):
    """:func:`conformal_pvalues` in the tail of the band ``thresholds`` (its side, or both)."""
    return conformal_pvalues(scores, calibration, band_tail(thresholds))


def _rank(alpha, n):
    """floor(alpha (n + 1)), robust to alpha = j / (n + 1) computed in floating point."""
    return int(math.floor(alpha * (n + 1) + 1e-9))


def conformal_band(calibration, false_rejection, sides=(True, True)):
    """The band that rejects a row exactly when its conformal p-value is <= ``false_rejection``.

    One-sided (lower): the edge is the k-th smallest calibration score, k =
    floor(alpha (n + 1)), and a row is rejected when its score is below it, so
    a new valid row is rejected with probability k / (n + 1) <= alpha. Two
    sided: alpha / 2 per side (the two-sided p-value is twice the smaller
    one-sided one), the edges the k-th smallest and the k-th largest score
    with k = floor(alpha / 2 (n + 1)).

    Parameters
    ----------
    calibration : array-like of shape (n_calibration,)
        log p(x) of valid rows the model was not fitted on.
    false_rejection : float in (0, 1)
        alpha, the largest share of valid rows to reject.
    sides : (bool, bool), default=(True, True)
        Whether the band has a lower and an upper edge.

    Returns
    -------
    tuple of (float or None, float or None)

    Warns
    -----
    UserWarning
        When alpha (alpha / 2 per side for two sides) is below 1 / (n + 1):
        n calibration rows cannot resolve it. The band then uses the
        extreme calibration score(s), which reject valid rows at 1 / (n + 1)
        per side, above alpha; the message says how many rows alpha needs.
    """
    ordered = np.sort(np.asarray(calibration, dtype=float))
    n = ordered.size
    if n == 0:
        raise ValueError("the band needs at least one calibration row")
    if not 0 < false_rejection < 1:
        raise ValueError(f"false_rejection must lie in (0, 1), got {false_rejection!r}")
    lower_side, upper_side = sides
    if not (lower_side or upper_side):
        raise ValueError("the band needs at least one side")
    per_side = false_rejection / 2 if lower_side and upper_side else false_rejection
    k = _rank(per_side, n)
    if k < 1:
        needed = int(math.ceil(1 / per_side)) - 1
        both = " per side (two-sided band)" if lower_side and upper_side else ""
        warnings.warn(
            f"false_rejection={false_rejection:g} is finer than {n} calibration rows can resolve: the smallest "
            f"conformal p-value is 1/(n+1) = {1 / (n + 1):.3g}{both}; the band uses the extreme calibration "
            f"score(s) and rejects valid rows at about {1 / (n + 1):.3g}{both}; "
            f"use at least {needed} calibration rows",
            UserWarning,
            stacklevel=3,
        )
        k = 1
    if lower_side and upper_side and 2 * k > n:
        raise ValueError(f"false_rejection={false_rejection:g} leaves an empty two-sided band on {n} calibration rows")
    lower = float(ordered[k - 1]) if lower_side else None
    upper = float(ordered[n - k]) if upper_side else None
    return lower, upper


def edge_rejection_intervals(calibration, thresholds, confidence=0.95):
    """For each edge of the band, an interval for the share of valid rows it rejects.

    Given the n calibration scores the band was set on, the share of new valid
    rows below the lower edge is F(lower) (F the valid rows' distribution of
    log p(x)), itself random through the calibration draw. When the edge is
    the k-th smallest calibration score, F(lower) ~ Beta(k, n + 1 - k)
    whatever F is (continuous F); an edge between the a-th and (a+1)-th score
    is bracketed by those two. The upper edge is the same from the top.

    Parameters
    ----------
    calibration : array-like of shape (n_calibration,)
    thresholds : tuple of (float or None, float or None)
    confidence : float, default=0.95

    Returns
    -------
    intervals : tuple of ((float, float) or None, (float, float) or None)
        Per edge, the central ``confidence`` interval of the share of valid
        rows it rejects (None for a missing side).
    """
    ordered = np.sort(np.asarray(calibration, dtype=float))
    n = ordered.size
    if n == 0:
        raise ValueError("the interval needs at least one calibration score")
    tail = (1 - confidence) / 2

    def interval(strictly_beyond, on_edge):
        # k-th order statistic from the rejected side: exact when the edge is a score,
        # else between the a-th (a >= 0) and (a+1)-th
        a = strictly_beyond
        k_low, k_high = (a + 1, a + 1) if on_edge else (a, a + 1)
        low = 0.0 if k_low == 0 else float(stats.beta.ppf(tail, k_low, n + 1 - k_low))
        high = 1.0 if k_high > n else float(stats.beta.ppf(1 - tail, k_high, n + 1 - k_high))
        return low, high

    lower, upper = thresholds
    out_lower = out_upper = None
    if lower is not None:
        out_lower = interval(int(np.searchsorted(ordered, lower, side="left")), bool(np.any(ordered == lower)))
    if upper is not None:
        out_upper = interval(int(n - np.searchsorted(ordered, upper, side="right")), bool(np.any(ordered == upper)))
    return out_lower, out_upper


def benjamini_hochberg(pvalues, fdr):
    """The Benjamini-Hochberg cut of a batch of p-values at false discovery rate ``fdr``.

    Rejecting every row with ``p <= cut`` keeps the expected share of valid
    rows among the rejected ones at most ``fdr`` for conformal p-values of one
    calibration set (they are positively dependent, PRDS: Bates, Candes, Lei,
    Romano and Sesia, "Testing for outliers with conformal p-values", Ann.
    Statist. 51, 2023), with the valid rows exchangeable with the calibration
    rows. NaN p-values (rows that could not be scored) take no part.

    Parameters
    ----------
    pvalues : array-like of shape (n_samples,)
    fdr : float in (0, 1)

    Returns
    -------
    cut : float
        The largest p-value rejected; 0.0 when none is.
    """
    if not 0 < fdr < 1:
        raise ValueError(f"fdr must lie in (0, 1), got {fdr!r}")
    p = np.asarray(pvalues, dtype=float)
    p = p[~np.isnan(p)]
    if p.size == 0:
        return 0.0
    adjusted = stats.false_discovery_control(p, method="bh")
    rejected = adjusted <= fdr
    return float(p[rejected].max()) if rejected.any() else 0.0


def describe_band(calibration, thresholds, percentiles, false_rejection=None, confidence=0.95, folds=None):
    """Sentences on how a band was set and what share of valid rows each edge rejects (for info and the report).

    The first sentence says what set the band (percentiles or a false-rejection
    rate) on how many calibration rows; then one per edge with its interval
    from :func:`edge_rejection_intervals`, e.g. "the lower edge rejects
    0.4%-2.9% of valid rows (95%)". ``folds``: the calibration scores are
    out-of-fold ones of that many cross-fitted networks.
    """
    n = len(calibration)
    if false_rejection is not None:
        how = f"set for a false-rejection rate of {false_rejection:g} (conformal rank threshold)"
    else:
        shown = ", ".join("none" if p is None else f"{p:g}" for p in percentiles)
        how = f"percentiles ({shown})"
    source = f" (out-of-fold scores of {folds} cross-fitted networks)" if folds else ""
    lines = [f"{how} of {n} calibration rows{source}"]
    for side, interval in zip(("lower", "upper"), edge_rejection_intervals(calibration, thresholds, confidence)):
        if interval is not None:
            low, high = interval
            lines.append(f"the {side} edge rejects {_share(low)}-{_share(high)} of valid rows "
                         f"({confidence:.0%}; order statistics of the calibration rows)")
    return lines


def _share(x):
    return f"{100 * x:.2g}%" if x < 0.1 else f"{100 * x:.0f}%"
