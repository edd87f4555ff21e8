"""Batch drift: does a batch's log p(x) differ from the calibration rows', and which columns moved?

Under no drift, a batch's rows and the calibration rows are exchangeable: the
rank of any row among them all is uniform. Every test here is distribution-free
under that hypothesis and needs nothing but ranks.

* **Edges.** A row below the band's lower edge is below the k-th smallest
  calibration score for k = #{calibration < lower} + 1 (the lower edge is a
  percentile, at or below that order statistic). A clean row falls below the
  k-th of n calibration scores with probability exactly k / (n + 1), and the
  *count* of m batch rows below it is beta-binomial, BetaBinom(m, k, n + 1 - k),
  not binomial: the edge's true coverage F(s_(k)) is itself a Beta(k, n + 1 - k)
  variable, shared by all the batch's rows. A binomial test at p = k/(n+1)
  ignores that and over-alarms on large batches: at n = 1000, k = 250 and
  m = 500 the variance of the count is 1.5 times the binomial one, and the
  binomial test at 1% alarmed on 3.0% of 4000 simulated clean batches (9.4%
  with n = 200 calibration rows), the beta-binomial one on 0.75% (0.8%). The test is one-sided (too many rows
  beyond the edge: what a data engineer pays for), the p-value
  ``P(BetaBinom >= count)``; exact when the edge is an order statistic,
  conservative by less than 1/(n+1) in share when it is interpolated.
* **Far tail.** The same test below the calibration scores' order statistic
  nearest their 1st percentile (k = max(1, floor(0.01 (n + 1)))). Faulty rows
  mostly score far below the band (on bench_mixed's titanic, planted faults
  have median log p(x) -41 nats against -16 for the clean rows' 10th
  percentile), and at the band's 25% edge they are lost among the 25% of clean
  rows expected there: 20% faulty rows in 200 move that share from 25% to
  about 32%, which 216 calibration rows cannot tell from chance (p ~ 0.1).
  Below the 1% edge the same rows are a many-fold excess. 1% is the band's
  one-sided setting of the design notes, not tuned on any benchmark; skipped
  when the band's lower edge is at least as far out.
* **Rank test.** Mann-Whitney U of the batch's log p(x) against the
  calibration scores, two-sided: the edge tests see the tails, this one a
  shift of the bulk (a unit change in one column lowers every row's log p(x)
  a little), for which it is more powerful than Kolmogorov-Smirnov's maximum
  CDF gap; two-sided because a batch that is *more* typical than the
  calibration rows (duplicated or constant rows) has drifted too.
* **Columns.** For each column, Mann-Whitney U of the batch's per-row
  log p(x_j | z) (posterior expectation, as ``explain`` uses) against the
  calibration rows'. A column is named when its test survives Holm's
  correction; its shift is the difference of medians, in nats (negative: the
  batch's values are less likely than the calibration rows').
* **Alarm.** The score tests (up to four) and the column tests are two
  families; each gets ``alpha / 2`` (all of ``alpha`` when no columns are
  tested) and Holm's step-down within it, so the probability of any false
  alarm is at most ``alpha`` under exchangeability, whatever the dependence
  between the tests. ``p_value`` is the smallest adjusted p-value.

The default ``alpha = 0.01``: run once per batch, an alarm at 0.05 would fire
on one clean batch in 20, a weekly false alarm for a daily pipeline; at 0.01
one in a hundred. The p-values are valid on average over calibration sets; for
one fixed model, clean batches' alarms are correlated (they share its
calibration rows), so a model whose calibration set was unlucky alarms more
often than ``alpha``, one whose set was lucky less.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

__all__ = [
    "DEFAULT_ALPHA",
    "MAX_CALIBRATION_COLUMN_ROWS",
    "ColumnShift",
    "DriftReport",
    "EdgeTest",
    "batch_drift",
    "calibration_column_sample",
    "edge_test",
    "holm",
    "render_drift",
]

DEFAULT_ALPHA = 0.01
#: expected share of clean rows below the far-tail edge (see the module docstring)
TAIL_SHARE = 0.01
#: Calibration rows whose per-column log-probabilities a model keeps (and
#: writes to its file): 1000 x 64 columns is about 0.6 MB of JSON at 4
#: decimals. Against 1000 rows, Mann-Whitney finds a median shift of a quarter
#: of a standard deviation in a 2000-row sample at 0.01/64.
MAX_CALIBRATION_COLUMN_ROWS = 1000
#: Decimals kept of the stored per-column log-probabilities (nats): far below
#: any shift worth naming, and a model file stays small.
COLUMN_DECIMALS = 4


@dataclass(frozen=True)
class EdgeTest:
    """The batch's rows beyond one edge of the band against their expectation under no drift.

    Attributes
    ----------
    side : {'below', 'above', 'far below'}
    edge : float
        The band's edge, nats.
    n_beyond : int
        Batch rows strictly below the lower edge (or above the upper one).
    share : float
        ``n_beyond`` over the batch's rows.
    expected_share : float
        k / (n + 1), the probability that a clean row falls beyond the k-th
        order statistic of the n calibration scores at or beyond the edge.
    p_value : float
        P(count >= n_beyond) under BetaBinom(m, k, n + 1 - k), unadjusted.
    """

    side: str
    edge: float
    n_beyond: int
    share: float
    expected_share: float
    p_value: float


@dataclass(frozen=True)
class ColumnShift:
    """One column's per-row log p(x_j | z) in the batch against the calibration rows.

    Attributes
    ----------
    column : str
    shift_nats : float
        Median in the batch minus median in the calibration rows (negative:
        less likely than usual).
    p_value : float
        Mann-Whitney p-value, Holm-adjusted within the column family and
        doubled for the two families (compare it with ``alpha``).
    """

    column: str
    shift_nats: float
    p_value: float


@dataclass(frozen=True)
class DriftReport:
    """A batch compared with the calibration rows (see the module docstring).

    Attributes
    ----------
    n_rows : int
        Batch rows with a log p(x) (rows that could not be scored are not tested).
    n_calibration : int
        Calibration scores compared with.
    alpha : float
        Level of the alarm (family-wise over all its tests).
    drift : bool
        True when any test is significant at ``alpha`` after correction.
    p_value : float
        The smallest adjusted p-value of all tests (``drift`` is ``p_value <= alpha``).
    below, above : EdgeTest or None
        The edges' tests; None for a side the band does not have.
    tail : EdgeTest or None
        The far-tail test (side 'far below'); None when the band's lower edge
        is already that far out.
    rank_p_value : float
        Mann-Whitney p-value of the batch's log p(x) against the calibration
        scores, two-sided, unadjusted.
    median_shift_nats : float
        Median log p(x) of the batch minus that of the calibration rows.
    n_column_rows : int
        Batch rows whose columns were compared (0: columns not tested).
    columns : tuple of ColumnShift
        The columns that moved (adjusted p-value <= alpha), largest shift first.
    note : str
        Why a part was not tested, else ''.
    """

    n_rows: int
    n_calibration: int
    alpha: float
    drift: bool
    p_value: float
    below: EdgeTest | None
    above: EdgeTest | None
    rank_p_value: float
    median_shift_nats: float
    tail: EdgeTest | None = None
    n_column_rows: int = 0
    columns: tuple = field(default_factory=tuple)
    note: str = ""

    def to_dict(self):
        """The report as plain JSON-able values."""
        return asdict(self)


# ---------------------------------------------------------------- helpers
def holm(p_values):
    """Holm's step-down adjusted p-values (valid under any dependence)."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def calibration_column_sample(column_log_prob, max_rows=MAX_CALIBRATION_COLUMN_ROWS, seed=0):
    """The calibration rows' per-column log p(x_j | z) a model keeps: at most ``max_rows`` rows, a fixed-seed
    random subset (calibration rows given to ``calibrate`` may be in any order), rounded to COLUMN_DECIMALS."""
    column_log_prob = np.asarray(column_log_prob, dtype=np.float64)
    n = column_log_prob.shape[0]
    if n > max_rows:
        keep = np.sort(np.random.RandomState(seed).choice(n, max_rows, replace=False))
        column_log_prob = column_log_prob[keep]
    return np.round(column_log_prob, COLUMN_DECIMALS)


def edge_test(scores, calibration_scores, edge, side):
    """The beta-binomial test of the rows of ``scores`` beyond ``edge`` (see :class:`EdgeTest`)."""
    scores = np.asarray(scores, dtype=float)
    calibration_scores = np.asarray(calibration_scores, dtype=float)
    n, m = calibration_scores.size, scores.size
    if side in ("below", "far below"):
        beyond, k = int(np.sum(scores < edge)), int(np.sum(calibration_scores < edge)) + 1
    elif side == "above":
        beyond, k = int(np.sum(scores > edge)), int(np.sum(calibration_scores > edge)) + 1
    else:
        raise ValueError(f"side must be 'below', 'far below' or 'above', got {side!r}")
    if k > n:  # the edge lies beyond every calibration score: no order statistic bounds it
        expected, p_value = 1.0, 1.0
    else:
        expected = k / (n + 1)
        p_value = float(stats.betabinom.sf(beyond - 1, m, k, n + 1 - k)) if beyond else 1.0
    return EdgeTest(side, float(edge), beyond, beyond / m if m else 0.0, expected, min(1.0, p_value))


def _mann_whitney(batch, calibration, axis=0):
    """Two-sided Mann-Whitney p-values; 1 where every value ties (nothing to rank)."""
    p = stats.mannwhitneyu(batch, calibration, alternative="two-sided", axis=axis).pvalue
    return np.where(np.isnan(p), 1.0, p)


# ------------------------------------------------------------------ public
def batch_drift(scores, calibration_scores, thresholds, alpha=DEFAULT_ALPHA, column_log_prob=None,
                calibration_column_log_prob=None, names=None):
    """Compare a batch with the calibration rows.

    Parameters
    ----------
    scores : array-like of shape (n_rows,)
        log p(x) of the batch's rows (NaN, rows that could not be scored, are
        left out).
    calibration_scores : array-like of shape (n_calibration,)
        log p(x) of the calibration rows (``validation_scores_``).
    thresholds : tuple of (float or None, float or None)
        The band (``thresholds_``).
    alpha : float, default=0.01
        Level of the alarm, family-wise.
    column_log_prob : array-like of shape (n_sample, n_features), optional
        Per-row posterior expectation of log p(x_j | z) of batch rows (all of
        them, or a random sample); without it, columns are not tested.
    calibration_column_log_prob : array-like of shape (n_kept, n_features), optional
        The same for calibration rows (``calibration_column_log_prob_``).
    names : list of str, optional
        Column names (default ``x0, x1, ...``).

    Returns
    -------
    DriftReport
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
    scores = np.asarray(scores, dtype=float)
    scores = scores[~np.isnan(scores)]
    calibration_scores = np.asarray(calibration_scores, dtype=float)
    n_rows, n_cal = scores.size, calibration_scores.size
    if n_rows == 0:
        return DriftReport(0, n_cal, alpha, False, 1.0, None, None, 1.0, 0.0, note="no scored rows to test")
    lower, upper = thresholds
    below = None if lower is None else edge_test(scores, calibration_scores, lower, "below")
    above = None if upper is None else edge_test(scores, calibration_scores, upper, "above")
    tail = None
    k_tail = max(1, int(np.floor(TAIL_SHARE * (n_cal + 1))))
    if below is None or below.expected_share > k_tail / (n_cal + 1):
        tail = edge_test(scores, calibration_scores, np.sort(calibration_scores)[k_tail - 1], "far below")
    rank_p = float(_mann_whitney(scores, calibration_scores))
    score_p = [t.p_value for t in (below, above, tail) if t is not None] + [rank_p]

    note, moved, n_column_rows = "", (), 0
    families = 1
    if column_log_prob is None:
        note = "columns not tested: no per-column log-probabilities of the batch"
    elif calibration_column_log_prob is None:
        note = ("columns not tested: the model keeps no calibration rows' per-column log-probabilities "
                "(written before they existed; calibrate() it again)")
    else:
        batch_columns = np.asarray(column_log_prob, dtype=float)
        cal_columns = np.asarray(calibration_column_log_prob, dtype=float)
        if batch_columns.ndim != 2 or cal_columns.ndim != 2 or batch_columns.shape[1] != cal_columns.shape[1]:
            raise ValueError(f"per-column log-probabilities of shapes {batch_columns.shape} and "
                             f"{cal_columns.shape} do not match")
        if len(batch_columns):
            families = 2
            n_column_rows = len(batch_columns)
            names = [f"x{j}" for j in range(batch_columns.shape[1])] if names is None else [str(n) for n in names]
            column_p = np.minimum(1.0, families * holm(_mann_whitney(batch_columns, cal_columns)))
            shift = np.median(batch_columns, axis=0) - np.median(cal_columns, axis=0)
            named = [j for j in np.argsort(-np.abs(shift), kind="stable") if column_p[j] <= alpha]
            moved = tuple(ColumnShift(names[j], float(shift[j]), float(column_p[j])) for j in named)
            column_min = float(column_p.min())
    score_min = float(np.minimum(1.0, families * holm(score_p)).min())
    p_value = min(score_min, column_min) if families == 2 else score_min
    return DriftReport(
        n_rows=n_rows, n_calibration=n_cal, alpha=float(alpha), drift=bool(p_value <= alpha),
        p_value=float(p_value), below=below, above=above, rank_p_value=rank_p,
        median_shift_nats=float(np.median(scores) - np.median(calibration_scores)), tail=tail,
        n_column_rows=n_column_rows, columns=moved, note=note,
    )


def render_drift(report, max_columns=5):
    """One or two lines of text for a summary on stderr."""
    if report.n_rows == 0:
        return f"drift: not tested ({report.note})"
    verdict = "DRIFT" if report.drift else "no drift"
    edges = []
    for test in (report.below, report.above, report.tail):
        if test is not None:
            where = "below the 1% tail" if test.side == "far below" else f"{test.side} the band"
            edges.append(f"{test.share:.1%} {where} (expected {test.expected_share:.1%}, "
                         f"p={test.p_value:.2g})")
    line = (f"drift: {verdict} at alpha={report.alpha:g} (p={report.p_value:.2g}; {report.n_rows} rows vs "
            f"{report.n_calibration} calibration rows): {'; '.join(edges)}; median log p(x) "
            f"{report.median_shift_nats:+.2f} nats (rank test p={report.rank_p_value:.2g})")
    if report.columns:
        shown = ", ".join(f"{c.column} {c.shift_nats:+.2f} nats" for c in report.columns[:max_columns])
        more = f" and {len(report.columns) - max_columns} more" if len(report.columns) > max_columns else ""
        line += f"\ndrift: columns that moved (median log p(x_j|z), {report.n_column_rows} rows): {shown}{more}"
    elif report.note:
        line += f"\ndrift: {report.note}"
    return line
