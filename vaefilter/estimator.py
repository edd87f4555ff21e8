"""VAEOutlierDetector: the scikit-learn face of vaefilter (numpy and pandas; torch stays behind ._torch and the model)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    OutlierMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, check_scalar, validate_data

from .band import band_from_scores, band_pvalues, conformal_band, exclude_lowest, signed_distance, validate_percentiles
from .columns import VALUE_KINDS, TableSchema, is_time_dtype
from .drift import DEFAULT_ALPHA, batch_drift, calibration_column_sample
from ._torch import device_of, resolve_device, seeded_torch, to_numpy, to_tensor
from .explanations import explain_rows, quote_cell, render_reasons
from .model.likelihoods import build_likelihood
from .scoring.marginal import (
    activation_floats_for,
    check_finite_scores,
    concatenate_estimates,
    encode_in_passes,
    estimate_log_marginal,
    log_marginal_without_columns,
    row_misplacement,
    search_proposals,
)
from .scoring.posterior_search import SEARCH_CHOICE_DRAWS, SEARCH_THRESHOLD, raised_threshold
from .scoring.proposal import refit_proposal
from .scoring.sequential import DecisionMargins, concatenate_records, fit_margins, sequential_log_marginal
from .scoring.threads import MIN_ROWS_PER_DECIDING_THREAD, MIN_ROWS_PER_THREAD, map_row_slices, scoring_threads
from .model.network import VAENetwork
from .model.relations import strongest_relations
from .model.training import FIT_TITLE, TrainingConfig, train

_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Columns per rejected row whose deficit explain conditions on the rest of the
# row: each costs one more pass of K draws for that row, and the reason names
# at most three columns.
CONDITIONED_CANDIDATES = 4
# The conditioned deficits of a row use at most this share of K draws (or the
# draws its decision used, if fewer); None: as many as the decision used.
# Conditioning costs CONDITIONED_CANDIDATES passes per row below the band: at
# its decision's draws it cost as many decodes as deciding every row did
# (titanic 25 vs 26.5 draws per row of the file, modechoice 46 vs 46), and
# most of it on the few rows near the edge that need all K to be decided
# (47-72% of it). Set by cost; benchmarks/check_reasons.py measures what it
# does to the reasons.
CONDITIONED_DRAW_SHARE = 0.3
# Candidates whose posterior deficit is below this many nats are not conditioned
# (None: every candidate is): half the naming floor (MIN_DEFICIT_NATS = 1). Of
# the candidate slots, weighted by draws, 28% (titanic, fair) and 50%
# (modechoice) lie below it. Chosen on those three tables by
# benchmarks/check_reasons.py (bench_mixed part (d) unchanged to within a row,
# the first named column of rows below the band unchanged on 97-99%; at 1.0 nats
# 95-97%); RESULTS.md also reports it on four tables it was not chosen on.
CONDITIONED_MIN_DEFICIT = 0.5

# calibration_folds='auto' cross-fits the band below this many rows: there a
# calibration_fraction of 0.2 holds out fewer than 100 rows, too few to place
# a 1st-percentile edge (the (1, None) band's) between two scores, and the
# network trains on 70% of rows that are scarce. A rule of resolution, not a
# figure tuned on a benchmark; benchmarks/choose_defaults.py --calibration-folds
# measures what it does to held-out log-likelihood on the tuning tables.
CROSS_FIT_BELOW_ROWS = 500
# Folds of cross-fitted calibration under 'auto': each fold's network trains
# on 4/5 of the rows (72% after early stopping's 10%), near the final
# network's 90%, at 5 extra fits.
CROSS_FIT_FOLDS = 5

# epoch_selection='auto' chooses the epoch count by cross-validation below this
# many rows (and early stopping above). On the nine small tuning tables
# (84-309 rows, 2 seeds; benchmarks/check_small_tables.py --rule, RESULTS.md
# small_tables_epoch_rule) it gained 0.40 nats/row on average over early
# stopping; on five tables cut to 700 rows an earlier version gained nothing
# (-0.02), so the threshold is the one of cross-fitted calibration below.
CV_EPOCHS_BELOW_ROWS = 500
# Folds of that cross-validation: each fold trains on 2/3 of the rows; 3 folds
# cost 3 runs (one per fold, every candidate count read off the same run).
CV_EPOCHS_FOLDS = 3
# The candidates are max_epochs halved while at least this many epochs: 800,
# 400, ..., 25 at the default. On ppca with 200 rows the best count was 50,
# below a 100-400 grid (benchmarks/RESULTS.md, small_tables_kfold_epochs).
CV_EPOCHS_MIN = 25
# The counts are compared by the mean held-out log p(x) without the lowest 5%
# of rows: a fold model trained on 2/3 of a small table scores a few rows of
# the other third at -1000 to -3600 nats (star98), and the plain mean then
# chose 100 epochs and lost 6.3 nats/row to early stopping. Over the 18 fits,
# trimmed 5% +0.40 (worst -0.39), median +0.33 (worst -1.02), plain mean
# +0.07 (worst -6.30). Refitting the proposal (50 steps) at every count
# changed no choice of the trimmed mean and cost 2-4x the time.
CV_TRIM_SHARE = 0.05


def epoch_criterion(log_px, trim_fraction=None):
    """What cross-validation compares epoch counts by: the mean held-out log p(x), nats per row.

    The lowest CV_TRIM_SHARE of the scores (or ``trim_fraction``, if more)
    are left out; a score that is not finite (NaN, a row out of the fold
    model's reach) counts as -inf, so a count any of whose kept rows fails
    loses to every count that scores them all.
    """
    log_px = np.asarray(log_px, dtype=np.float64)
    log_px = np.where(np.isfinite(log_px), log_px, -np.inf)
    kept, _ = exclude_lowest(log_px, max(CV_TRIM_SHARE, trim_fraction or 0.0))
    return float(np.mean(log_px[kept]))


def chosen_epoch_count(epoch_scores):
    """The count with the best cross-validated score in ``[(epochs, score), ...]`` (ties to the fewer); None if none."""
    if not epoch_scores:
        return None
    return max(epoch_scores, key=lambda pair: pair[1])[0]


def held_out_label(detector):
    """'held-out', or 'training-row' when the fit kept no early-stopping rows (its checks then ran on training rows)."""
    return "held-out" if len(detector.validation_loss_curve_) else "training-row"


def band_percentiles(detector):
    """The percentiles a fitted ``detector``'s band was set by (for ``vaefilter info`` and the
    report): ``band_percentiles_``, or in files and pickles from before it the saved setting."""
    return getattr(detector, "band_percentiles_", None) or detector.threshold_percentiles


def search_threshold(detector):
    """The misplacement above which a fitted ``detector`` searches a row: ``search_threshold_``, or in
    pickles from before it was chosen at fit time the fixed SEARCH_THRESHOLD."""
    return getattr(detector, "search_threshold_", SEARCH_THRESHOLD)


def training_bound_name(detector):
    """The bound ``detector`` was trained on: 'ELBO', or 'K-sample bound' (for info, the report, plots)."""
    k = int(getattr(detector, "training_samples", 1))
    return "ELBO" if k == 1 else f"{k}-sample bound"


def training_loss_name(detector):
    """What a fitted ``detector``'s loss curves measure: '-ELBO', or '-(K-sample bound)'."""
    name = training_bound_name(detector)
    return f"-{name}" if name == "ELBO" else f"-({name})"


def describe_epochs(detector):
    """How long a fitted ``detector`` trained and why, in one sentence (for ``vaefilter info`` and the report)."""
    n_iter, best = int(detector.n_iter_), int(detector.best_epoch_)
    scores = getattr(detector, "epoch_scores_", None)
    if not scores:
        monitored = "held-out rows'" if held_out_label(detector) == "held-out" else "training"
        return (f"{n_iter} of at most {detector.max_epochs} epochs, early stopping on the {monitored} "
                f"{training_loss_name(detector)}; "
                f"the weights of epoch {best} (its lowest) kept")
    chosen = chosen_epoch_count(scores)
    listed = ", ".join(f"{epochs}: {score:.3f}{' (chosen)' if epochs == chosen else ''}" for epochs, score in scores)
    return (f"epoch count {chosen} chosen by {CV_EPOCHS_FOLDS}-fold cross-validation (held-out log p(x) per count, "
            f"nats/row, without the lowest {CV_TRIM_SHARE:.0%} of rows: {listed}); then trained on every row not "
            f"held out for the band for {n_iter} of at most {chosen} epochs (stopping early on the training "
            f"{training_loss_name(detector)}), "
            f"the weights of epoch {best} (its lowest) kept")


#: A fitted attribute that every fitted detector has (no default for older files).
REQUIRED = object()


@dataclass(frozen=True)
class FittedAttribute:
    """One attribute of the fitted state beyond the network (``network_``) and the schema (``schema_``).

    Attributes
    ----------
    name : str
        The attribute, ending in ``_``.
    form : {'band', 'seed', 'names', 'floats', 'rows', 'matrix', 'plain', 'pairs', 'margins'}
        How a model file holds it: ``'band'`` a (lower, upper) pair of numbers
        or None; ``'seed'`` a whole number; ``'names'`` column names, or absent;
        ``'floats'`` a non-empty array of finite numbers; ``'rows'`` an
        array of row indices (int64); ``'matrix'`` a 2-D float array, or
        absent; ``'margins'`` sequential decisions' margins
        (:class:`vaefilter.scoring.sequential.DecisionMargins`) or None; ``'plain'`` a JSON
        value as it is; ``'pairs'`` a list of (step, value) pairs.
    default : object
        The value for model files and pickles written before the attribute
        existed, or :data:`REQUIRED`.
    """

    name: str
    form: str
    default: object = REQUIRED


#: The fitted state, described once: model files (persistence.py) write and
#: read exactly these, and pickles written before an attribute existed get its
#: default (``__setstate__``).
FITTED_STATE = (
    FittedAttribute("thresholds_", "band"),
    FittedAttribute("importance_seed_", "seed"),
    FittedAttribute("feature_names_in_", "names", default=None),
    FittedAttribute("validation_scores_", "floats"),
    FittedAttribute("column_typical_", "floats"),
    FittedAttribute("loss_curve_", "plain"),
    FittedAttribute("validation_loss_curve_", "plain"),
    FittedAttribute("n_iter_", "plain"),
    FittedAttribute("best_epoch_", "plain"),
    FittedAttribute("n_features_in_", "plain"),
    # files written before the proposal refit existed have no history
    FittedAttribute("proposal_curve_", "pairs", default=()),
    # trim_fraction's row indices; files written before it have none
    FittedAttribute("training_set_aside_", "rows", default=()),
    FittedAttribute("calibration_excluded_", "rows", default=()),
    # the drift alarm's per-column calibration sample; files written before it lack it
    FittedAttribute("calibration_column_log_prob_", "matrix", default=None),
    # files written before calibrate(false_rejection=...) set the band by percentiles
    FittedAttribute("false_rejection_", "plain", default=None),
    # null: files written before it, whose band came from threshold_percentiles as saved
    FittedAttribute("band_percentiles_", "band", default=None),
    # sequential decisions' margins; files written before them score every row at K draws
    FittedAttribute("decision_margins_", "margins", default=None),
    # null: the band from a held-out calibration split (files before calibration_folds)
    FittedAttribute("calibration_folds_", "plain", default=None),
    # null: early stopping chose the epochs (files before epoch_selection)
    FittedAttribute("epoch_scores_", "pairs", default=None),
    # files written before posterior_search_tolerance searched every row above the fixed threshold
    FittedAttribute("search_threshold_", "plain", default=SEARCH_THRESHOLD),
)


#: Parameters added since the first pickles, with the value that reproduces what
#: a detector pickled before them did (a pickle holds no entry for them, and
#: get_params would fail).
EARLIER_PARAMS = {"training_samples": 1, "posterior_search_tolerance": 0.0}


def _check_float32_range(X, names):
    """Values beyond float32 would silently become inf inside the model."""
    too_large = np.abs(X) > _FLOAT32_MAX
    if too_large.any():
        row, col = map(int, np.argwhere(too_large)[0])
        raise ValueError(
            f"X has a value too large for float32 at row {row}, column {names[col]!r} "
            f"({float(X[row, col]):g}); rescale that column"
        )


def _checked_batch_scores(log_px, n_sample):
    """``drift_report``'s ``log_px``: scores of a batch that ``X`` (``n_sample`` rows) samples.

    ``batch_drift`` leaves NaN out as rows the CLI could not score; from a
    caller, all-NaN scores read as 'no drift', so every score must be finite.
    """
    scores = np.asarray(log_px)
    if scores.ndim != 1 or not np.issubdtype(scores.dtype, np.number) or np.iscomplexobj(scores):
        raise ValueError(f"log_px must be a 1-D array of real scores (score_samples of the batch), "
                         f"got shape {scores.shape} and dtype {scores.dtype}")
    if scores.size < n_sample:
        raise ValueError(f"log_px has {scores.size} scores, fewer than the {n_sample} rows of X; X is the batch "
                         "or a sample of it, and log_px scores every row of the batch")
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise ValueError(f"log_px is not finite at {bad.size} position(s), the first {int(bad[0])} "
                         f"({scores[bad[0]]}); pass the batch's score_samples")
    return scores.astype(float)


def _is_real_number(value):
    if isinstance(value, (complex, np.complexfloating)):
        return value.imag == 0  # scikit-learn refuses a complex array even where every cell is real
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _first_non_numeric_cell(X):
    """(row, column, value) of the first cell of a 2-D input that is not a real number, or None."""
    cells = X.to_numpy(dtype=object) if isinstance(X, pd.DataFrame) else np.asarray(X, dtype=object)
    if cells.ndim != 2:
        return None
    for (row, col), value in np.ndenumerate(cells):
        if not _is_real_number(value):
            return row, col, value
    return None


def _column_label(X, col, names):
    """A column's name: the DataFrame's own (which may differ from the model's), else the model's."""
    if isinstance(X, pd.DataFrame):
        return str(X.columns[col])
    return names[col] if names is not None and col < len(names) else f"x{col}"


#: the conversion errors of ``validate_data`` whose cell is worth finding
_CONVERSION_ERRORS = ("could not convert", "argument must be", "Complex data not supported", "invalid literal")


def _check_scorable_columns(X):
    """Dates in a numeric model's DataFrame scored as nanoseconds (about -2e30 nats)."""
    if not isinstance(X, pd.DataFrame):
        return
    for name, dtype in X.dtypes.items():
        if is_time_dtype(dtype):
            raise ValueError(f"column {str(name)!r} has dtype {dtype}; this detector models numbers: "
                             "convert it to the numbers it was fitted on")


def _check_unique_columns(frame):
    """Each DataFrame column needs its own name (``frame[name]`` is then one column)."""
    repeated = list(dict.fromkeys(frame.columns[frame.columns.duplicated()]))
    if repeated:
        raise ValueError(f"X has duplicate column names {repeated}; give each column its own name")


#: The fields explain() puts before the per-column deficits (n_draws with ``sequential``).
EXPLANATION_FIELDS = ("log_px", "is_valid", "reason", "p_value", "n_draws")


def _plain_percentiles(percentiles):
    """(lower, upper) percentiles as Python floats or None (a tuple, as a model file gives back)."""
    return tuple(None if p is None else float(p) for p in percentiles)


def deficit_column_names(names):
    """explain()'s deficit column of each feature: its name, or ``deficit_<name>`` where the name is
    one of EXPLANATION_FIELDS (a column named ``reason`` would otherwise hide the ``reason`` field)."""
    taken = set(EXPLANATION_FIELDS) | {str(name) for name in names}
    out = []
    for name in names:
        if str(name) in EXPLANATION_FIELDS:
            renamed = f"deficit_{name}"
            while renamed in taken:
                renamed = f"deficit_{renamed}"
            taken.add(renamed)
            name = renamed
        out.append(name)
    return out


class VAEOutlierDetector(ClassNamePrefixFeaturesOutMixin, OutlierMixin, TransformerMixin, BaseEstimator):
    """Data-validation gate built on a variational autoencoder.

    The detector learns p(x, z) = p(z) p(x|z) from rows known to be valid and
    scores new rows by their marginal log-likelihood log p(x), estimated by
    importance sampling with the encoder q(z|x) as proposal. A band of
    percentiles of log p(x) on held-out valid rows separates valid from invalid
    rows: by default rows between the 25th and 75th percentile are valid.

    Parameters
    ----------
    latent_dim : int, default=8
        Dimension of the latent variable z.

    hidden_layer_sizes : array-like of int, default=(128, 128)
        Widths of the encoder's hidden layers; the decoder mirrors them. An
        empty tuple gives linear encoder and decoder maps.

    likelihood : {'auto', 'gaussian', 'bernoulli'}, default='auto'
        Family of p(x_j|z) per column. 'auto': each numeric column is modelled
        as what its training values are (its value kind, see
        ``column_kinds`` and ``schema_``): whole numbers get a discretised
        logistic mass per integer, strictly positive amounts a log-normal
        density, non-negative amounts with zeros a mass at 0 plus a
        log-normal above it, 0/1 flags a Bernoulli mass (sparse 0/1 columns
        are counts: see :mod:`vaefilter.columns`) and other columns
        a Gaussian. log p(x) is then a sum of log-masses (discrete columns)
        and log-densities (continuous ones) of the row as it is, and values a
        kind cannot produce (2.5 in a column of whole numbers, a negative
        amount) are out of support. 'gaussian': a Gaussian for every column
        not boolean by dtype (the behaviour before value kinds).
        'bernoulli': data in [0, 1]; binary columns get a Bernoulli mass,
        others the continuous Bernoulli density.

    n_importance_samples : int, default=100
        K, the number of draws from q(z|x) per row when estimating log p(x).
        K=1 gives the ELBO; larger K tightens the estimate at linear cost.

    proposal_steps : int, default=200
        Adam steps that refit the encoder, after training and with the
        decoder frozen, as the importance sampler's proposal (the 32-sample
        importance-weighted bound with DReG gradients; see
        :mod:`vaefilter.scoring.proposal`). The model, hence the density being
        estimated, does not change; the estimate at a given K gets tighter.
        0 keeps the encoder as trained.

    posterior_search_steps : int, default=10
        When scoring, rows where the encoder's mean looks misplaced (the
        gradient of log p(x, z) there, in units of q's standard deviations,
        has a norm above ``search_threshold_``, at least 2: see
        ``posterior_search_tolerance``) get a second proposal: at most this many Newton
        steps up log p(x, z) find the row's posterior mode, and the Laplace
        Gaussian there supplies half of the K draws, with mixture weights that keep the estimate unbiased
        (see :mod:`vaefilter.scoring.posterior_search`). Where the encoder misses a
        row's posterior (digits, arrhythmia) this takes the K=100 estimate
        from 0.4-90 nats below the K=5000 one to within 0.1; on data where
        it does not, few rows are searched (0-0.4% on bench_speed's
        default-fitted models). On digits, where 60% of the rows are
        searched, scoring costs 1.54x scoring without the search at two
        threads (benchmarks/RESULTS.md, speed_round6_score; 1.48x at one
        thread in speed_round5_score). 0 samples from q(z|x) alone.

    posterior_search_tolerance : float, default=0.005
        Nats per row of held-out log p(x) that the fit may give up to search
        fewer rows. At fit time the held-out rows are scored with and
        without the search (under 4 sets of draws, the search run once);
        the threshold above which a row is searched (``search_threshold_``)
        is raised from 2 as long as the gains of the rows it stops
        searching, summed over the held-out rows and divided by their
        number, plus one standard error, stay within this (see
        :func:`vaefilter.scoring.posterior_search.raised_threshold`).
        Where the search gains little (titanic: 0.004 nats per row in all,
        with 39% of the rows flagged) it then fires only on rows more
        misplaced than any held-out row; where it gains much (digits: 0.88)
        the threshold stays near 2. 0 searches every row above 2. Models
        whose band comes from ``calibration_folds`` keep 2.

    sequential_decisions : bool, default=True
        ``predict``, ``decision_function`` and ``explain(sequential=True)``
        (the CLI's ``filter``) spend draws where a decision needs them: every
        row starts with 6% of its K draws, rows clearly inside or outside
        the band stop, the others go on in rounds (10%, 30%, then K). The margins
        of "clearly" are calibrated at fit time on the held-out rows against
        their full-K estimates (``decision_margins_``, see
        :mod:`vaefilter.scoring.sequential`). A row that goes the distance gets its
        full-K score; a row's decision does not depend on the rows scored
        beside it. ``score_samples`` always uses K draws. False: K draws for
        every row everywhere.

    max_epochs : int, default=800
        Maximum number of passes over the training rows. A cap, not the
        usual stop: at the default patience the fits of the fifteen tuning
        tables of ``benchmarks/choose_defaults.py --schedule-longer`` stopped
        early after 123-667 epochs. Under cross-validated epoch selection,
        the largest candidate count.

    epoch_selection : {'auto', 'early_stopping', 'cross_validation'}, default='auto'
        How ``fit`` decides how long to train.

        - 'early_stopping': on the loss of the ``validation_fraction`` rows
          held out (``n_iter_no_change``, ``tol``).
        - 'cross_validation': the rows not held out for the band are split
          into 3 folds; for each, a network trained on the other two is read
          at ``max_epochs``, half of it, a quarter, ... down to 25 epochs,
          and scores the fold (K draws, the posterior search). The count
          with the best mean held-out log p(x), without the lowest 5% of
          rows (``epoch_scores_``; ties go to the fewer epochs), is then trained on all those rows, the early
          stopping rows included, with the step size cut on stalls of the
          training loss. It costs three more training runs.
        - 'auto': cross-validation below ``CV_EPOCHS_BELOW_ROWS`` (500)
          rows given to ``fit``, early stopping above. On small tables a
          10% early-stopping split is a few dozen rows: too noisy to stop
          on, and rows taken from training. On nine small tuning tables
          (84-309 rows, two seeds) it gained 0.40 nats/row of held-out
          log p(x) on average, on 10 of 18 fits, and lost at most 0.39
          (``benchmarks/check_small_tables.py --rule``); fits there take
          2-4x as long (seconds to tens of seconds).

        Cross-validation needs 6 rows to train on and ``max_epochs`` of at
        least 50 (two candidates); without them 'auto' stops early and
        'cross_validation' is an error. 'auto' also stops early when
        ``calibration_fraction=0`` without ``calibration_folds``: the band
        is then set on the early-stopping rows, which cross-validation would
        train on; 'cross_validation' there sets it on the training rows
        (optimistic).

    batch_size : int, default=128
        Rows per optimisation step (capped at the number of training rows).

    learning_rate : float, default=3e-3
        Adam's step size.

    training_samples : int, default=16
        Draws from q(z|x) per row in the training loss. 1 trains on the
        ELBO (one draw, the KL term in closed form); K > 1 on the K-sample
        importance-weighted bound (IWAE; Burda et al., 2016), which lies
        between the ELBO and log p(x) and tightens with K. The ELBO's gap to
        log p(x) pulls the decoder towards models whose posterior a Gaussian
        q can follow; the tighter bound lets the fit go nearer to the
        maximum likelihood, at about K times the decoder work per step.
        Chosen by held-out log-likelihood on tuning tables no reported
        benchmark uses (``benchmarks/choose_defaults.py --training-samples``):
        against the ELBO, 16 gained 0.36 nats/row of mean shortfall over 15
        tables (up to 3.4 on a wide table of yearly rates, 0.4-1.5 on three
        others) and lost at most 0.27 (a 105-row table); fits take about
        twice as long. The loss curves are in the units of this bound.

    validation_fraction : float, default=0.1
        Share of the rows given to ``fit`` held out for early stopping and
        for the proposal refit's checks: never trained on, but the fit
        chooses by them, so their scores are optimistic. With 0, training
        stops at ``max_epochs`` or on the training loss. Unused when the
        epoch count is cross-validated (``epoch_selection``): those rows
        are trained on.

    calibration_fraction : float, default=0.2
        Share of the rows given to ``fit`` held out for the band alone: never
        seen by training, early stopping or the proposal refit, so new valid
        rows are exchangeable with them and the band's false-rejection rate
        and :meth:`pvalues` hold in finite samples. With 0, the band is set
        on the early-stopping rows (the behaviour before this parameter; on
        the mixed-type benchmark tables, a (1, None) band then rejected 2.4%
        of clean held-out rows instead of 1%) and p-values are approximate;
        with both fractions 0, on the training rows (optimistic). On tiny
        inputs the split keeps one training row first, then one calibration
        row, then early-stopping rows.

    calibration_folds : int, 'auto' or None, default=None
        Cross-fitted calibration: instead of holding ``calibration_fraction``
        of the rows out of training, the final network trains on every row
        but the early-stopping ones, and the band is set on out-of-fold
        scores. The rows are dealt into this many folds; each fold is scored
        by a network trained the same way on the other folds alone, so every
        row given to ``fit`` is a calibration row scored by a model that
        never saw it. It costs this many extra fits. 'auto': 5 folds below
        ``CROSS_FIT_BELOW_ROWS`` (500) rows, where a 20% split would leave
        fewer than 100 calibration rows, else the split. None: the split.
        The final network saw more rows than the fold networks, so new valid
        rows score, if anything, a little higher than the calibration rows:
        the lower edge's false rejection is then at most its nominal rate,
        the upper edge's may exceed it, and :meth:`pvalues` are
        approximate (cross-conformal, not split-conformal).

    threshold_percentiles : tuple of (float or None, float or None), default=(25, 75)
        Percentiles of the calibration rows' log p(x) that bound the valid
        band. None drops a side: ``(1, None)`` rejects only the least likely
        ~1% of valid rows. To ask for a false-rejection rate exactly, use
        ``calibrate(false_rejection=alpha)`` (on the sides this sets).

    n_iter_no_change : int, default=40
        Epochs without an improvement of at least ``tol`` in the validation
        loss before the step size is cut by 5 (training goes on from the best
        weights), twice; at the third such stall training stops. 40 (with
        ``max_epochs=800``) was chosen by held-out log-likelihood on fifteen
        tuning tables no reported benchmark uses, by a rule fixed before the
        runs (the cheapest setting within 0.05 nats/row of the best mean
        shortfall): patience 10, 20, 30, 40, 60 and 80 were tried, and 60
        and 80 gained nothing over 40 that the rule counts (mean shortfall
        0.092 nats/row at 40, 0.055 at 60, 0.171 at 80). Against the
        previous 20 (and 400 epochs), 40 is within 0.05 nats/row of the best
        on 28 of 30 fits against 14 of 30, and fits take about 1.5x as long
        (``choose_defaults.py --schedule``, ``--schedule-longer``,
        ``--schedule-end``; benchmarks/RESULTS.md).

    tol : float, default=1e-4
        Minimum improvement of the validation loss (nats per row).

    min_variance : float, default=1e-3
        Floor of the variance of Gaussian, log-normal and whole-number
        columns, in units of the column's training variance (on the log scale
        for log-scale columns). Its job is numerical safety: it bounds the
        density so that no row can score +inf on a column the model predicts
        exactly. Whole-number columns have a mass, at most 1, whatever the
        floor. The default was chosen by held-out log-likelihood, a
        label-free criterion, on tasks no reported benchmark uses
        (``benchmarks/choose_defaults.py``): 1e-3 and 1e-4 tie, 1e-2 loses up
        to 0.13 nats/row and the old 0.1 up to 9 nats/row (20-D
        probabilistic PCA, where it sits above the data's noise).

    column_relations : {'linear', 'numeric', 'none'}, default='linear'
        'numeric': p(x | z) is a product of p(x_j | z, x_<j), where each
        Gaussian, log-normal or whole-number column's location moves
        linearly with the residuals of the numeric columns before it (see
        :mod:`vaefilter.model.relations`), so exact relations between
        columns (a width that is max - min, a log-area twice a log-radius)
        need no latent precision; with Gaussian columns the model then
        contains the full-covariance Gaussian. 'linear': besides, the
        categories of the binary and categorical columns (first in the
        factorisation) move those locations and the logits of the discrete
        columns after them, so a number that depends on a category (a
        species' body mass) is scored given it. The per-column terms of
        ``explain`` are then log p(x_j | z, x_<j). 'none': p(x | z) =
        prod_j p(x_j | z), the model before this parameter (files written
        before it load as 'none', files with numeric relations only as
        'numeric').

    continuous_family : {'gaussian', 'student_t'}, default='gaussian'
        Law of the continuous columns given z: Gaussian, or Student-t with
        degrees of freedom learned per column (at least 2), whose heavier
        tails cost less for rare large residuals.

    categorical_features : 'from_dtype', list of str or int, boolean mask, or None, default='from_dtype'
        Columns of a DataFrame modelled as categorical (a softmax over the
        training categories plus an 'unseen' bucket): names, positions, or a
        boolean mask with one entry per column. 'from_dtype' takes the
        columns of category, object or string dtype, as scikit-learn's
        HistGradientBoosting does. An array X is modelled as numbers; a list
        given with one is refused.

    column_kinds : dict of {str or int: str} or None, default=None
        Value kinds that replace the inferred ones, by column name (or
        position): 'continuous', 'count' (whole numbers >= 0), 'integer'
        (whole numbers), 'positive', 'nonnegative', 'binary' or
        'proportion' (in [0, 1], a continuous Bernoulli). Each must hold on
        the training values. Inferred kinds (``likelihood='auto'``): 0/1
        values are 'binary'; all whole numbers 'count' (none negative, on the
        log scale when a Gaussian of log(x + 1/2) fits them better than one
        of x) or 'integer'; else 'positive' when all > 0, 'nonnegative' when
        all >= 0, 'continuous' otherwise. ``schema_`` records them and
        ``vaefilter info`` shows them.

    handle_missing : {'error', 'model'}, default='error'
        'error': a missing cell (NaN/None) raises ValueError. 'model': where a
        column has missing cells in training, whether a cell is missing is
        modelled (a Bernoulli) and only present values are scored; a missing
        cell in a column that was never missing in training is out of support
        (it costs ``OUT_OF_SUPPORT_LOG_PROB`` nats and is named by ``explain``).
        Nothing is imputed.

    trim_fraction : float in [0, 0.5) or None, default=None
        Share of the rows given to ``fit`` that may be bad although they are
        meant to be valid. None (or 0) trusts every row. Otherwise the VAE is
        fitted by trimmed likelihood: after a warm-up of
        ``vaefilter.model.training.TRIM_WARMUP_EPOCHS`` epochs on every row, each
        epoch scores every training row's -ELBO and trains on all but the
        ``trim_fraction`` share of highest loss; the validation loss that
        stops training is trimmed the same way. The calibration rows' lowest
        ``trim_fraction`` share of log p(x) is excluded before the band is
        computed (also by ``calibrate``). ``training_set_aside_`` and
        ``calibration_excluded_`` say which rows. It guards the model against
        a few gross faults; it cannot undo what the rows did to the schema
        (a typo among the training values is a category, a negative value
        makes a positive column continuous). Not scikit-learn's (or PyOD's)
        ``contamination``, which sets the share of training rows ``predict``
        rejects: here ``threshold_percentiles`` sets that.

    random_state : int, RandomState instance or None, default=None
        Fixes the validation split, the initial weights, the minibatch order,
        the training noise and the importance samples.

    device : {'auto', 'cpu', 'cuda'}, default='auto'
        Where torch computes. 'auto' takes a GPU when one is available.

    n_jobs : int, default=None
        Threads that score rows on the CPU (``score_samples``, ``predict``,
        ``decision_function``, ``explain`` and everything built on them), each
        on its own slice of the rows with one torch thread. None takes torch's
        thread count (``torch.get_num_threads()``: the cores torch would use
        anyway); -1 all cores, as in joblib. A row's score is a function of
        the row alone, so ``n_jobs`` changes the speed, not the scores or
        the decisions (up to the float32 rounding by which a row's score can
        move between batches). Each thread gets at least 1,000 rows (4,096
        under sequential decisions, whose rounds and search cost more per
        call), so smaller batches score in one; a GPU scores in one. Each
        thread's passes take up to 8 MB per hidden activation. The training
        steps do not use it (``fit``'s scores of its
        held-out calibration split do). Unlike scikit-learn's None (one
        job), None here keeps the cores torch was already using.

    verbose : int, default=0
        If > 0, show a progress bar (requires the ``progress`` extra, tqdm).

    Attributes
    ----------
    thresholds_ : tuple of (float or None, float or None)
        The band ``(lower, upper)`` of log p(x), nats per row.

    calibration_folds_ : int or None
        Folds the band was cross-fitted with (``calibration_folds``); None
        when it was set on a held-out split or by :meth:`calibrate`.

    validation_scores_ : ndarray of shape (n_calibration,)
        log p(x) of the rows the band was calibrated on, without those of
        ``calibration_excluded_`` (the calibration rows: ``calibration_fraction`` of ``fit``'s rows, or the rows given to
        :meth:`calibrate`); the reference of :meth:`pvalues`. The name is
        kept from before the calibration rows were split from the
        early-stopping ones.

    false_rejection_ : float or None
        The false-rejection rate the band was set for by
        ``calibrate(false_rejection=...)``; None when it is set by
        ``threshold_percentiles``.
    band_percentiles_ : tuple of (float or None, float or None) or None
        The percentiles ``thresholds_`` were set by (with ``false_rejection_``,
        only which sides are None counts): ``threshold_percentiles`` at fit,
        or those given to :meth:`calibrate`. A later ``set_params`` does not
        move the band, nor this. None in model files written before it.
    training_set_aside_ : ndarray of int
        With ``trim_fraction``: the training rows (indices into the X given
        to ``fit``) that the final weights set aside, the
        ``floor(trim_fraction * n_train)`` of highest -ELBO; empty otherwise.

    calibration_excluded_ : ndarray of int
        With ``trim_fraction``: the calibration rows whose log p(x) was
        excluded from the band, the lowest ``floor(trim_fraction * n)``
        (indices into the X given to ``fit``, or to the last ``calibrate``);
        empty otherwise. ``validation_scores_`` holds the rows kept.

    loss_curve_ : list of float
        Training loss (nats per row) after each epoch: -ELBO, or the negative
        ``training_samples``-sample bound.

    validation_loss_curve_ : list of float
        Held-out training loss (nats per row) after each epoch; empty when
        ``validation_fraction=0``.

    n_iter_ : int
        Number of epochs run.

    best_epoch_ : int
        Epoch whose weights were kept (lowest held-out loss; the training
        loss when no early-stopping rows were held out).

    epoch_scores_ : list of (int, float) or None
        With cross-validated epoch selection (``epoch_selection``): each
        candidate epoch count and the mean held-out log p(x) (nats per row)
        of its 3 folds; the network was trained for the best. None when
        early stopping decided.

    search_threshold_ : float
        Rows whose misplacement (see ``posterior_search_steps``) exceeds it
        get the posterior search; chosen at fit time by
        ``posterior_search_tolerance`` on the held-out rows, at least 2.

    decision_margins_ : DecisionMargins or None
        Stopping margins of sequential decisions (nats the full-K estimate
        rose above or fell below each round's estimate on the held-out rows,
        their 99.9th percentile read from a generalised Pareto tail);
        None (models without held-out rows, or saved before sequential
        decisions) takes K draws for every row.

    proposal_curve_ : list of (int, float)
        (step, held-out 32-sample bound in nats per row) at each check of the
        proposal refit; step 0 is the encoder as trained.

    network_ : torch.nn.Module
        The fitted encoder, decoder and likelihood.

    schema_ : TableSchema
        Name, kind (numeric, binary, categorical), value kind (see
        ``column_kinds``) and missingness of each column.

    column_typical_ : ndarray of shape (n_features_in_,)
        Median over the calibration rows of each column's expected
        log p(x_j | z) under the posterior: the yardstick of ``explain``.

    calibration_column_log_prob_ : ndarray of shape (n_kept, n_features_in_)
        Each column's expected log p(x_j | z) on at most 1000 calibration rows
        (a fixed-seed subset), what ``drift_report`` compares a batch's columns
        with. Absent from models saved before it existed.

    n_features_in_ : int
        Number of features seen during ``fit``.

    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during ``fit``, when X has string column names.

    See Also
    --------
    sklearn.ensemble.IsolationForest : Tree-based outlier detector.
    sklearn.mixture.GaussianMixture : Density model with exact log-likelihood.

    Examples
    --------
    >>> import numpy as np
    >>> from vaefilter import VAEOutlierDetector
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(300, 3))
    >>> det = VAEOutlierDetector(latent_dim=2, hidden_layer_sizes=(16,),
    ...                          max_epochs=20, random_state=0).fit(X)
    >>> det.predict([[0.0, 0.0, 0.0], [8.0, 8.0, 8.0]])
    array([ 1, -1])
    """

    _parameter_constraints: dict = {
        "latent_dim": [Interval(Integral, 1, None, closed="left")],
        "hidden_layer_sizes": ["array-like"],
        "likelihood": [StrOptions({"auto", "gaussian", "bernoulli"})],
        "n_importance_samples": [Interval(Integral, 1, None, closed="left")],
        "posterior_search_steps": [Interval(Integral, 0, None, closed="left")],
        "posterior_search_tolerance": [Interval(Real, 0, None, closed="left")],
        "sequential_decisions": ["boolean"],
        "proposal_steps": [Interval(Integral, 0, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "epoch_selection": [StrOptions({"auto", "early_stopping", "cross_validation"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "training_samples": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "calibration_fraction": [Interval(Real, 0, 1, closed="left")],
        "calibration_folds": [Interval(Integral, 2, None, closed="left"), StrOptions({"auto"}), None],
        "threshold_percentiles": [tuple, list],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "min_variance": [Interval(Real, 0, None, closed="neither")],
        "column_relations": [StrOptions({"linear", "numeric", "none"})],
        "continuous_family": [StrOptions({"gaussian", "student_t"})],
        "categorical_features": [StrOptions({"from_dtype"}), "array-like", None],
        "column_kinds": [dict, None],
        "handle_missing": [StrOptions({"error", "model"})],
        "trim_fraction": [Interval(Real, 0, 0.5, closed="left"), None],
        "random_state": ["random_state"],
        "device": [StrOptions({"auto", "cpu", "cuda"})],
        "n_jobs": [Interval(Integral, None, -1, closed="right"), Interval(Integral, 1, None, closed="left"), None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        latent_dim=8,
        hidden_layer_sizes=(128, 128),
        likelihood="auto",
        n_importance_samples=100,
        proposal_steps=200,
        posterior_search_steps=10,
        posterior_search_tolerance=0.005,
        sequential_decisions=True,
        max_epochs=800,
        epoch_selection="auto",
        batch_size=128,
        learning_rate=3e-3,
        training_samples=16,
        validation_fraction=0.1,
        calibration_fraction=0.2,
        calibration_folds=None,
        threshold_percentiles=(25, 75),
        n_iter_no_change=40,
        tol=1e-4,
        min_variance=1e-3,
        column_relations="linear",
        continuous_family="gaussian",
        categorical_features="from_dtype",
        column_kinds=None,
        handle_missing="error",
        trim_fraction=None,
        random_state=None,
        device="auto",
        n_jobs=None,
        verbose=0,
    ):
        self.latent_dim = latent_dim
        self.hidden_layer_sizes = hidden_layer_sizes
        self.likelihood = likelihood
        self.n_importance_samples = n_importance_samples
        self.proposal_steps = proposal_steps
        self.posterior_search_steps = posterior_search_steps
        self.posterior_search_tolerance = posterior_search_tolerance
        self.sequential_decisions = sequential_decisions
        self.max_epochs = max_epochs
        self.epoch_selection = epoch_selection
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.training_samples = training_samples
        self.validation_fraction = validation_fraction
        self.calibration_fraction = calibration_fraction
        self.calibration_folds = calibration_folds
        self.threshold_percentiles = threshold_percentiles
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.min_variance = min_variance
        self.column_relations = column_relations
        self.continuous_family = continuous_family
        self.categorical_features = categorical_features
        self.column_kinds = column_kinds
        self.handle_missing = handle_missing
        self.trim_fraction = trim_fraction
        self.random_state = random_state
        self.device = device
        self.n_jobs = n_jobs
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the VAE on valid rows and calibrate the band on a held-out part.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows known to be valid. At least two.

        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : object
            The fitted detector.
        """
        previous = dict(self.__dict__)
        try:
            return self._fit(X)
        except BaseException:
            # a refused refit leaves the fitted model as it was: the schema of the refused X used
            # to replace the fitted one under the old network, and scores moved silently
            self.__dict__.clear()
            self.__dict__.update(previous)
            raise

    def _fit(self, X):
        """:meth:`fit`'s work, on a detector whose state :meth:`fit` restores if it raises."""
        X = self._validate_for_fit(X)
        percentiles = validate_percentiles(self.threshold_percentiles)
        hidden = self._validated_hidden_layer_sizes()
        rng = check_random_state(self.random_state)
        device = resolve_device(self.device)

        n_folds = self._n_calibration_folds(X.shape[0])
        train_rows, val_rows, cal_rows = self._split_rows(X.shape[0], rng, calibrate=not n_folds)
        init_seed, train_seed, self.importance_seed_ = rng.randint(np.iinfo(np.int32).max, size=3)
        proposal_seed = rng.randint(np.iinfo(np.int32).max)
        self.epoch_scores_ = None
        if self._selects_epochs_by_cv(X.shape[0], len(train_rows) + len(val_rows)):
            # no early-stopping rows: they are trained on, and the count is chosen by held-out folds
            train_rows, val_rows = np.union1d(train_rows, val_rows), val_rows[:0]
            self.epoch_scores_ = self._cross_validated_epochs(X, train_rows, rng, hidden, device)
        network, history, proposal = self._train_network(
            X, train_rows, val_rows, (init_seed, train_seed, proposal_seed), hidden, device, self._chosen_epochs())
        self.training_set_aside_ = train_rows[history.set_aside]
        self.network_ = network
        self.loss_curve_ = history.loss_curve
        self.validation_loss_curve_ = history.validation_loss_curve
        self.n_iter_ = history.n_iter
        self.best_epoch_ = history.best_epoch
        self.proposal_curve_ = list(zip(proposal.steps, proposal.validation_bound))
        if n_folds:
            self._cross_calibrate(X, n_folds, rng, hidden, device, percentiles)
            return self
        self.calibration_folds_ = None
        calibration_rows = cal_rows if len(cal_rows) else val_rows if len(val_rows) else train_rows
        held_out = cal_rows if len(cal_rows) else val_rows
        self.search_threshold_ = self._chosen_search_threshold(X[held_out])
        self._calibrate_on(X[calibration_rows], percentiles, rows=calibration_rows)
        # the margins of sequential decisions, from rows the fit did not train on (none: K draws for every row)
        self.decision_margins_ = self._fit_decision_margins(X[held_out]) if len(held_out) else None
        return self

    def _train_network(self, X, train_rows, val_rows, seeds, hidden, device, max_epochs, description=FIT_TITLE):
        """A network trained on ``X[train_rows]``, stopped early on ``X[val_rows]``, its proposal refitted.

        Returns ``(network, history, proposal)``; ``seeds`` are the
        (initialisation, training, proposal) seeds.
        """
        init_seed, train_seed, proposal_seed = seeds
        network, history, train_tensor, val_tensor = self._trained(
            X, train_rows, val_rows, (init_seed, train_seed), hidden, device, max_epochs, description=description)
        proposal = self._refit_proposal(network, train_tensor, val_tensor, history.set_aside, proposal_seed)
        return network.eval(), history, proposal

    def _trained(self, X, train_rows, val_rows, seeds, hidden, device, max_epochs, snapshots=(),
                 description=FIT_TITLE):
        """``(network, history, train_tensor, val_tensor)``: the network trained, its proposal not yet refitted."""
        init_seed, train_seed = seeds
        X_train = X[train_rows]
        with seeded_torch(init_seed):
            likelihood = build_likelihood(
                X_train,
                self.likelihood,
                self.min_variance,
                categorical_sizes=self.schema_.categorical_sizes,
                binary_columns=self.schema_.binary_columns,
                missing_columns=self.schema_.missing_columns,
                value_kinds=self.schema_.value_kinds,
                log_scale_columns=self.schema_.log_scale_columns,
                relations=self.column_relations in ("linear", "numeric"),
                discrete_relations=self.column_relations == "linear",
                continuous_family=self.continuous_family,
            )
            network = VAENetwork(likelihood, self.latent_dim, hidden).to(device)
        val_tensor = to_tensor(X[val_rows], device) if len(val_rows) else None
        train_tensor = to_tensor(X_train, device)
        config = self._training_config(max_epochs, len(train_rows), description)
        history = train(network, train_tensor, val_tensor, config, train_seed, snapshots=snapshots)
        return network, history, train_tensor, val_tensor

    def _training_config(self, max_epochs, n_train, description=FIT_TITLE):
        return TrainingConfig(
            description=description,
            max_epochs=max_epochs,
            batch_size=min(self.batch_size, n_train),
            learning_rate=self.learning_rate,
            n_samples=self.training_samples,
            n_iter_no_change=self.n_iter_no_change,
            tol=self.tol,
            verbose=self.verbose,
            trim_fraction=self.trim_fraction or 0.0,
        )

    def _refit_proposal(self, network, train_tensor, val_tensor, set_aside, seed):
        """Refit the encoder as a proposal on the training rows kept (checked on the early-stopping rows)."""
        kept = train_tensor[np.setdiff1d(np.arange(train_tensor.shape[0]), set_aside)] if len(set_aside) else train_tensor
        return refit_proposal(network, kept, train_tensor if val_tensor is None else val_tensor, self.proposal_steps,
                              min(self.batch_size, train_tensor.shape[0]), seed)

    def _chosen_epochs(self):
        """The epoch count cross-validation chose (ties to the fewer), else ``max_epochs``."""
        chosen = chosen_epoch_count(self.epoch_scores_)
        return self.max_epochs if chosen is None else chosen

    def _epoch_candidates(self):
        """The epoch counts cross-validation chooses from: ``max_epochs`` halved while at least CV_EPOCHS_MIN."""
        candidates = [self.max_epochs]
        while candidates[-1] // 2 >= CV_EPOCHS_MIN:
            candidates.append(candidates[-1] // 2)
        return sorted(candidates)

    def _selects_epochs_by_cv(self, n_samples, n_trainable):
        """Whether ``fit`` on ``n_samples`` rows (``n_trainable`` not held out for the band) cross-validates the epochs."""
        mode = self.epoch_selection
        if mode == "auto":
            # with calibration_fraction=0 the early-stopping rows are the band's: keep them held out
            band_on_stopping_rows = not self.calibration_fraction and not self.calibration_folds
            small = n_samples < CV_EPOCHS_BELOW_ROWS
            mode = "cross_validation" if small and not band_on_stopping_rows else "early_stopping"
        if mode == "early_stopping":
            return False
        problem = (f"at least {2 * CV_EPOCHS_FOLDS} rows to train on (not held out for the band), got {n_trainable}"
                   if n_trainable < 2 * CV_EPOCHS_FOLDS else
                   f"max_epochs >= {2 * CV_EPOCHS_MIN} (it chooses among max_epochs halved down to {CV_EPOCHS_MIN}), "
                   f"got {self.max_epochs}" if len(self._epoch_candidates()) < 2 else None)
        if problem and self.epoch_selection == "auto":
            return False  # nothing to hold out or to choose from: early stopping, as before
        if problem:
            raise ValueError(f"epoch_selection='cross_validation' needs {problem}")
        return True

    def _cross_validated_epochs(self, X, rows, rng, hidden, device):
        """``[(epochs, mean held-out log p(x)), ...]`` of each candidate count, over CV_EPOCHS_FOLDS folds of ``rows``.

        Each fold is scored (K draws and the posterior search, with the
        encoder as trained: refitting it as a proposal at every count cost
        2-4x the time and changed no choice) by
        networks trained on the other folds without early-stopping rows, one
        run per fold read at every candidate count.
        Compared by :func:`epoch_criterion`.
        """
        candidates = self._epoch_candidates()
        fold_of = rng.permutation(len(rows)) % CV_EPOCHS_FOLDS
        scores = np.empty((len(candidates), len(rows)))
        for fold in range(CV_EPOCHS_FOLDS):
            held, rest = np.flatnonzero(fold_of == fold), np.flatnonzero(fold_of != fold)
            # three seeds drawn, the third unused (no proposal refit): the stream the rule was chosen with
            init_seed, train_seed, _ = rng.randint(np.iinfo(np.int32).max, size=3)
            network, history, _, _ = self._trained(
                X, rows[rest], rows[:0], (init_seed, train_seed), hidden, device, self.max_epochs,
                snapshots=candidates, description=f"vaefilter fit: epoch count, fold {fold + 1}/{CV_EPOCHS_FOLDS}")
            held_tensor = to_tensor(X[rows[held]], device)
            for i, epochs in enumerate(candidates):
                network.load_state_dict(history.snapshots[epochs])
                scores[i, held] = estimate_log_marginal(
                    network.eval(), held_tensor, self.n_importance_samples, self.importance_seed_,
                    search_steps=self.posterior_search_steps).log_px
        return [(int(epochs), epoch_criterion(row, self.trim_fraction)) for epochs, row in zip(candidates, scores)]

    def _n_calibration_folds(self, n_samples):
        """Folds of cross-fitted calibration for ``n_samples`` rows; 0: a held-out calibration split."""
        folds = self.calibration_folds
        if folds == "auto":
            folds = CROSS_FIT_FOLDS if n_samples < CROSS_FIT_BELOW_ROWS else None
        if folds is None:
            return 0
        if folds > n_samples:
            raise ValueError(f"calibration_folds={folds} needs at least as many rows, got {n_samples}")
        return int(folds)

    def _cross_calibrate(self, X, n_folds, rng, hidden, device, percentiles):
        """The band and the margins from out-of-fold scores (``calibration_folds``).

        Each fold's rows are scored by a network trained, like the final
        one, on the other folds alone (its own early-stopping split): every
        calibration score is of a row its model never saw, and every row of
        ``X`` is a calibration row.
        """
        fold_of = rng.permutation(X.shape[0]) % n_folds
        log_px = np.empty(X.shape[0])
        column_log_prob = np.empty((X.shape[0], self.n_features_in_))
        networks = []
        for fold in range(n_folds):
            held = np.flatnonzero(fold_of == fold)
            rest = np.flatnonzero(fold_of != fold)
            train_at, val_at, _ = self._split_rows(len(rest), rng, calibrate=False)
            train_rows, val_rows = rest[train_at], rest[val_at]
            if self.epoch_scores_ is not None:  # trained like the final network: every row, the chosen epochs
                train_rows, val_rows = rest, rest[:0]
            network, _, _ = self._train_network(
                X, train_rows, val_rows, tuple(rng.randint(np.iinfo(np.int32).max, size=3)), hidden, device,
                self._chosen_epochs(), description=f"vaefilter fit: calibration fold {fold + 1}/{n_folds}")
            estimate = estimate_log_marginal(
                network, to_tensor(X[held], device), self.n_importance_samples, self.importance_seed_,
                per_column=True, search_steps=self.posterior_search_steps,
            )
            log_px[held], column_log_prob[held] = estimate.log_px, estimate.column_log_prob
            networks.append((network, held))
        self._calibrate_from(log_px, column_log_prob, np.arange(X.shape[0]), percentiles)
        self.calibration_folds_ = n_folds
        self.search_threshold_ = SEARCH_THRESHOLD  # the fold networks' scores above: searched at the fixed threshold
        record = concatenate_records([self._margin_record(network, X[held]) for network, held in networks])
        self.decision_margins_ = fit_margins(record) if record.draws else None

    def _fit_decision_margins(self, X_held_out):
        """Margins of sequential decisions from held-out rows scored at full K, round by round."""
        record = self._margin_record(self._network(), X_held_out)
        return fit_margins(record) if record.draws else None

    def _margin_record(self, network, X_held_out):
        """Every round's estimate of held-out rows scored by ``network`` at full K."""
        return sequential_log_marginal(
            network, to_tensor(X_held_out, device_of(network)), self.n_importance_samples, self.importance_seed_,
            self.thresholds_, None, search_steps=self.posterior_search_steps, record=True,
            search_threshold=self._search_threshold() if network is self.network_ else SEARCH_THRESHOLD,
        )

    def _calibrate_on(self, X_model, percentiles, rows=None):
        """The band, ``validation_scores_`` and ``column_typical_`` from calibration rows.

        ``rows`` names them in the caller's X (for ``calibration_excluded_``);
        default: their positions in ``X_model``.
        """
        estimate = self._log_marginal(X_model, per_column=True)
        self._calibrate_from(estimate.log_px, estimate.column_log_prob,
                             np.arange(len(X_model)) if rows is None else np.asarray(rows), percentiles)

    def _calibrate_from(self, log_px, column_log_prob, rows, percentiles):
        """The calibration attributes from calibration rows' scores; ``rows`` names them in fit's X."""
        check_finite_scores(log_px)
        kept, excluded = exclude_lowest(log_px, self.trim_fraction)
        self.calibration_excluded_ = rows[excluded]
        self.validation_scores_ = log_px[kept]
        self.column_typical_ = np.median(column_log_prob[kept], axis=0)
        self.thresholds_ = band_from_scores(self.validation_scores_, percentiles)
        self.calibration_column_log_prob_ = calibration_column_sample(column_log_prob[kept])
        self.false_rejection_ = None
        self.band_percentiles_ = _plain_percentiles(percentiles)

    # ----------------------------------------------------------- validation
    def _validate_for_fit(self, X):
        """Learn the schema and return the training model matrix."""
        if isinstance(X, pd.DataFrame):
            _check_unique_columns(X)
            schema = self._fit_schema(X, self.categorical_features)
            if not schema.is_numeric_only:
                self.schema_ = schema
                return self._table_model_matrix(X, reset=True)
        else:
            schema = None
            if self.categorical_features is not None and not (
                    isinstance(self.categorical_features, str) and self.categorical_features == "from_dtype"):
                raise ValueError("categorical_features names columns of a DataFrame; an array X is modelled as "
                                 "numbers (it was ignored): pass a DataFrame to model columns as categories")
        X = self._numeric_matrix(X, reset=True)
        self.schema_ = schema or self._fit_schema(pd.DataFrame(X, columns=[f"x{j}" for j in range(X.shape[1])]), None)
        self._check_values(X)
        return X

    def _fit_schema(self, frame, categorical_features):
        """The columns' kinds: inferred from the values under likelihood='auto', overridden by ``column_kinds``."""
        kinds = {}
        for key, kind in (self.column_kinds or {}).items():
            if isinstance(key, (Integral, np.integer)) and not isinstance(key, bool):
                if not 0 <= key < frame.shape[1]:
                    raise ValueError(f"column_kinds index {key} is out of range for {frame.shape[1]} columns")
                key = frame.columns[key]
            if kind not in VALUE_KINDS:
                raise ValueError(f"column_kinds[{key!r}] must be one of {list(VALUE_KINDS)}, got {kind!r}")
            kinds[str(key)] = kind
        return TableSchema.fit(frame, categorical_features, column_kinds=kinds, infer_kinds=self.likelihood == "auto")

    def _table_model_matrix(self, X, reset):
        """Model matrix of a DataFrame with categorical or boolean columns."""
        if not isinstance(X, pd.DataFrame):
            raise TypeError(
                "this detector was fitted on a DataFrame with categorical or boolean columns; "
                f"pass a DataFrame with columns {self.schema_.names}, got {type(X).__name__}"
            )
        validate_data(self, X, skip_check_array=True, reset=reset)
        if X.shape[1] != len(self.schema_.columns):
            raise ValueError(f"X has {X.shape[1]} features, but this detector expects {len(self.schema_.columns)}")
        # scikit-learn checks only all-string names; the schema reads columns by position, so
        # others (0, 1, ... of pd.DataFrame(array)) must match too, or swapped columns score silently
        names = [str(c) for c in X.columns]
        if not reset and names != self.schema_.names:
            raise ValueError(f"X has the columns {names}, but this detector was fitted on {self.schema_.names}, "
                             "in that order")
        if reset and X.shape[0] < 2:
            raise ValueError(f"Found array with {X.shape[0]} sample(s) while a minimum of 2 is required.")
        if X.shape[0] == 0:
            raise ValueError("Found array with 0 sample(s) (shape=(0, ...)) while a minimum of 1 is required.")
        matrix = self.schema_.encode(X)
        self._check_values(matrix)
        return matrix

    def _check_values(self, X):
        if self.handle_missing == "error" and np.isnan(X).any():
            row, col = map(int, np.argwhere(np.isnan(X))[0])
            raise ValueError(
                f"X contains NaN (a missing value) at row {row}, column {self.schema_.names[col]!r}; "
                "set handle_missing='model' to model missing cells"
            )
        if np.isinf(X).any():
            row, col = map(int, np.argwhere(np.isinf(X))[0])
            raise ValueError(f"X contains infinity ({X[row, col]}) at row {row}, column {self.schema_.names[col]!r}")
        _check_float32_range(X, self.schema_.names)

    def _validated_hidden_layer_sizes(self):
        sizes = list(self.hidden_layer_sizes)
        if any(not isinstance(h, (Integral, np.integer)) or h < 1 for h in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got {self.hidden_layer_sizes!r}")
        return tuple(int(h) for h in sizes)

    def _split_rows(self, n_samples, rng, calibrate=True):
        """(training, early-stopping, calibration) row indices.

        Priority on tiny inputs: one training row, then one calibration row
        (the band needs it), then early-stopping rows (training can stop on
        ``max_epochs`` instead). ``calibrate=False`` (cross-fitted
        calibration) holds out no calibration rows.
        """
        if self.validation_fraction + self.calibration_fraction >= 1:
            raise ValueError(
                f"validation_fraction + calibration_fraction must be below 1 (rows are left to train on), "
                f"got {self.validation_fraction} + {self.calibration_fraction}"
            )
        order = rng.permutation(n_samples)

        def share(fraction):
            return int(np.ceil(fraction * n_samples)) if fraction > 0 else 0

        n_cal = min(share(self.calibration_fraction), n_samples - 1) if calibrate else 0
        n_val = min(share(self.validation_fraction), n_samples - 1 - n_cal)
        cal, val, train = order[:n_cal], order[n_cal:n_cal + n_val], order[n_cal + n_val:]
        return np.sort(train), np.sort(val), np.sort(cal)

    # -------------------------------------------------------------- scoring
    def _network(self):
        """The fitted network on the device asked for now (models move with persistence)."""
        device = resolve_device(self.device)
        if next(self.network_.parameters()).device != device:
            self.network_.to(device)
        return self.network_

    def _log_marginal(self, X, per_column=False):
        network = self._network()
        rows = to_tensor(X, device_of(network))
        threshold = self._search_threshold()

        def score(start, stop, activation_floats):
            return estimate_log_marginal(network, rows[start:stop], self.n_importance_samples, self.importance_seed_,
                                         activation_floats, per_column=per_column,
                                         search_steps=self.posterior_search_steps, search_threshold=threshold)

        return concatenate_estimates(self._in_threads(score, rows.shape[0], rows.device))

    def _in_threads(self, score, n_rows, device, min_rows=MIN_ROWS_PER_THREAD):
        """``score(start, stop, activation_floats)`` of slices of ``n_rows`` rows in ``n_jobs`` threads (see
        :mod:`.scoring.threads`): the list of results, in row order."""
        n_threads = scoring_threads(self.n_jobs, device, n_rows, min_rows)
        # the pass budget of the caller's torch threads, shared by the scoring threads
        return map_row_slices(score, n_rows, n_threads, activation_floats_for(device))

    def _search_threshold(self):
        return search_threshold(self)

    def _chosen_search_threshold(self, X_held_out):
        """``search_threshold_`` from held-out rows (see ``posterior_search_tolerance``): SEARCH_THRESHOLD without them."""
        if not len(X_held_out) or not self.posterior_search_steps or self.n_importance_samples < 2 \
                or not self.posterior_search_tolerance:
            return SEARCH_THRESHOLD
        network = self._network()
        rows = to_tensor(X_held_out, device_of(network))
        found = search_proposals(network, rows, self.posterior_search_steps)
        gain = np.zeros(len(X_held_out))
        for draws in range(SEARCH_CHOICE_DRAWS):
            seed = self.importance_seed_ + draws
            searched = estimate_log_marginal(network, rows, self.n_importance_samples, seed,
                                             search_steps=self.posterior_search_steps, search=found)
            plain = estimate_log_marginal(network, rows, self.n_importance_samples, seed)
            gain += np.where(searched.searched, searched.log_px.astype(np.float64) - plain.log_px, 0.0)
        return raised_threshold(to_numpy(row_misplacement(network, rows)), gain / SEARCH_CHOICE_DRAWS,
                                self.posterior_search_tolerance)

    def _decide(self, X, per_column=False):
        """Estimates for decisions: in rounds (see ``sequential_decisions``), else K draws per row."""
        margins = getattr(self, "decision_margins_", None)
        if not self.sequential_decisions or margins is None:
            estimate = self._log_marginal(X, per_column=per_column)
            estimate.n_draws = np.full(X.shape[0], self.n_importance_samples)
            return estimate
        network = self._network()
        rows = to_tensor(X, device_of(network))
        threshold = self._search_threshold()

        def score(start, stop, activation_floats):
            return sequential_log_marginal(
                network, rows[start:stop], self.n_importance_samples, self.importance_seed_, self.thresholds_,
                margins, search_steps=self.posterior_search_steps, per_column=per_column,
                activation_floats=activation_floats, search_threshold=threshold,
            )

        return concatenate_estimates(self._in_threads(score, rows.shape[0], rows.device, MIN_ROWS_PER_DECIDING_THREAD))

    def _validate_for_scoring(self, X):
        check_is_fitted(self)
        # the parameters scoring reads, set after fit (set_params(n_importance_samples=0) divided by 0)
        self._validate_params()
        if isinstance(X, pd.DataFrame):
            _check_unique_columns(X)
        if not self.schema_.is_numeric_only:
            return self._table_model_matrix(X, reset=False)
        X = self._numeric_matrix(X, reset=False)
        self._check_values(X)
        return X

    def _numeric_matrix(self, X, reset):
        """``validate_data`` of a numeric model's input; NaN and inf are left to ``_check_values``,
        which names the row and column; the error of a cell that is not a number names them too."""
        _check_scorable_columns(X)
        if not reset and isinstance(X, pd.DataFrame) and X.shape[1] != self.n_features_in_:
            # scikit-learn's message, before pandas fails to cast an extra text column
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        try:
            return validate_data(self, X, dtype=[np.float64, np.float32], reset=reset, ensure_min_samples=2 if reset else 1,
                                 ensure_all_finite=False)
        except (ValueError, TypeError) as exc:
            # other errors (feature names, shapes) are not about a cell
            where = _first_non_numeric_cell(X) if any(e in str(exc) for e in _CONVERSION_ERRORS) else None
            if where is None:
                raise
            row, col, value = where
            name = _column_label(X, col, None if reset else self.schema_.names)
            # scikit-learn's own message and type first, as its checks and callers match them
            raise type(exc)(f"{exc}; the first value that is not a real number is at row {row}, column {name!r}: "
                            f"{quote_cell(value)}") from exc

    def score_samples(self, X):
        """Estimated log p(x) of each row, in nats (higher is more typical).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to score.

        Returns
        -------
        log_px : ndarray of shape (n_samples,)
            Importance-sampled log marginal likelihood per row. Deterministic
            for a fitted model, and independent of the other rows in X.
        """
        log_px = self._log_marginal(self._validate_for_scoring(X)).log_px
        check_finite_scores(log_px)
        return log_px

    def decision_function(self, X):
        """Signed distance of log p(x) to the band, in nats: > 0 inside.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to score.

        Returns
        -------
        distance : ndarray of shape (n_samples,)
            ``min(log p(x) - lower, upper - log p(x))``, with a missing side
            left out. Under ``sequential_decisions`` a row decided early has
            log p(x) estimated from the draws it used: its sign is the
            decision, its size that estimate's distance.
        """
        log_px = self._decide(self._validate_for_scoring(X)).log_px
        check_finite_scores(log_px)
        return signed_distance(log_px, self.thresholds_)

    def predict(self, X):
        """+1 for rows inside the band (valid), -1 for rows outside (invalid).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to classify.

        Returns
        -------
        is_inlier : ndarray of shape (n_samples,)
        """
        return np.where(self.decision_function(X) >= 0, 1, -1)

    def score(self, X, y=None):
        """Mean log p(x) of the rows, nats per row (for model selection).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows, ideally valid ones not seen in training.

        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        mean_log_px : float
        """
        return float(np.mean(self.score_samples(X)))

    def calibrate(self, X=None, threshold_percentiles=None, false_rejection=None):
        """Re-derive the band, without retraining: from new valid rows, or for a false-rejection rate.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or None, default=None
            Rows known to be valid and never used in fitting; they become the
            calibration rows (``validation_scores_``, ``column_typical_``).
            None keeps the current calibration rows' scores.

        threshold_percentiles : tuple, default=None
            Percentiles for the new band; defaults to ``self.threshold_percentiles``.
            With ``false_rejection``, only which sides are None counts.

        false_rejection : float in (0, 1) or None, default=None
            alpha: set the band so that a new valid row is rejected with
            probability at most alpha, exactly in finite samples (a rank
            threshold: a row is rejected when its conformal p-value, see
            :meth:`pvalues`, is <= alpha; alpha / 2 per side for a two-sided
            band). Valid under exchangeability of the calibration rows with
            new valid rows (see :meth:`pvalues` for what breaks it). Warns
            when alpha < 1 / (n + 1), which n calibration rows cannot resolve.

        Returns
        -------
        self : object
        """
        percentiles = validate_percentiles(
            self.threshold_percentiles if threshold_percentiles is None else threshold_percentiles
        )
        if false_rejection is not None and not (
            isinstance(false_rejection, Real) and not isinstance(false_rejection, bool) and 0 < false_rejection < 1
        ):
            raise ValueError(f"false_rejection must be a number in (0, 1), got {false_rejection!r}")
        if X is not None:
            self._calibrate_on(self._validate_for_scoring(X), percentiles)
            self.calibration_folds_ = None
        elif false_rejection is None:
            check_is_fitted(self)
            self.thresholds_ = band_from_scores(self.validation_scores_, percentiles)
            self.false_rejection_ = None
        if false_rejection is not None:
            check_is_fitted(self)
            sides = tuple(p is not None for p in percentiles)
            self.thresholds_ = conformal_band(self.validation_scores_, float(false_rejection), sides)
            self.false_rejection_ = float(false_rejection)
        self.band_percentiles_ = _plain_percentiles(percentiles)
        return self

    def pvalues(self, X):
        """Conformal p-value of each row's log p(x) against the calibration rows.

        With n calibration scores c (``validation_scores_``), a lower-only
        band gives p = (1 + #{c <= log p(x)}) / (n + 1), an upper-only band
        the same with >=, and a two-sided band min(1, 2 min(p_lower,
        p_upper)). A small p says few valid rows are as unusual.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to test.

        Returns
        -------
        pvalues : ndarray of shape (n_samples,)
            In [1/(n+1), 1].

        Notes
        -----
        Valid in finite samples under exchangeability: for a new valid row
        drawn like the calibration rows, ``P(p <= alpha) <= alpha`` for every
        alpha (over the draw of both). That holds for the rows held out by
        ``calibration_fraction`` (never seen by training, early stopping or
        the proposal refit) and for rows given to :meth:`calibrate` that the
        fit never saw. It breaks when the calibration rows took part in the
        fit (``calibration_fraction=0``: the band is then set on the
        early-stopping rows, whose scores are optimistic, and p-values of
        valid rows come out too small), after ``calibrate()`` on rows seen in
        training, and when new rows drift from the calibration rows.
        """
        check_is_fitted(self)
        return band_pvalues(self.score_samples(X), self.validation_scores_, self.thresholds_)

    def effective_sample_size(self, X):
        """Effective sample size of each row's importance weights, in [1, K].

        Near K the encoder's proposal matches the posterior and log p(x) is
        reliable; near 1 a single draw dominates and the estimate is noisy.
        """
        return self._log_marginal(self._validate_for_scoring(X)).effective_sample_size

    def explain(self, X, return_records=False, sequential=False):
        """Per-row scores, validity and the columns behind a low likelihood.

        For each column j the detector estimates E[log p(x_j | z)] under the
        posterior p(z | x) (self-normalised importance weights) and compares it
        with that column's median on the calibration rows
        (``column_typical_``). The deficit, in nats, says how much less likely
        the column's value is than usual given the rest of the row. For rows
        below the band, the ``CONDITIONED_CANDIDATES`` (4) columns of largest
        deficit are measured given the rest of the row instead,
        ``typical - log p(x_j | x_-j)``, on draws the column itself does not
        pull (a wild value drags z, and with it every column the dragged z
        mispredicts), at ``CONDITIONED_DRAW_SHARE`` (0.3) of K draws or the
        row's own, if fewer, and only for candidates whose posterior deficit
        is at least ``CONDITIONED_MIN_DEFICIT`` (0.5) nats; the larger of the
        two estimates is kept. Values outside
        a column's support (its value kind) are named first.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Rows to explain.
        return_records : bool, default=False
            Also return the structured reasons the ``reason`` text is rendered from.
        sequential : bool, default=False
            Decide rows as ``predict`` does (see ``sequential_decisions``):
            a row decided early has ``log_px`` and deficits estimated from
            the draws it used, its conditioned deficits at as many draws (at
            most 0.3 K, as at full K); the
            frame then has an ``n_draws`` column after ``p_value``.

        Returns
        -------
        explanation : DataFrame of shape (n_samples, 4 + n_features)
            ``log_px`` (nats), ``is_valid`` (bool), ``reason`` ('' inside the
            band, else the up to three columns with the largest deficits and
            any value training never saw), ``p_value`` (see :meth:`pvalues`),
            then one deficit column per feature, named as the feature; a
            feature named like one of those fields (or ``n_draws``) has its
            deficit column named ``deficit_<name>``, so that every field
            keeps its name and the frame's column names stay unique.
            The index is X's index when X is a DataFrame.
        records : list of (vaefilter.explanations.Explanation or None)
            Only with ``return_records``: per row, its reason as a record
            (None inside the band).
        """
        X_model = self._validate_for_scoring(X)
        estimate = self._decide(X_model, per_column=True) if sequential else self._log_marginal(X_model, per_column=True)
        check_finite_scores(estimate.log_px)
        deficits = self.column_typical_ - estimate.column_log_prob
        names = list(self.schema_.names)
        values = X.to_numpy(dtype=object) if isinstance(X, pd.DataFrame) else np.asarray(X, dtype=object)
        lower = self.thresholds_[0]
        below = np.flatnonzero(estimate.log_px < lower) if lower is not None else []
        if len(below):
            draws = estimate.n_draws if sequential else None
            self._condition_deficits(X_model, estimate.log_px, deficits, below, draws)
        records = explain_rows(estimate.log_px, self.thresholds_, deficits, values, self.schema_, X_model)
        reasons = render_reasons(records)
        frame = pd.DataFrame(
            {
                "log_px": estimate.log_px,
                "is_valid": signed_distance(estimate.log_px, self.thresholds_) >= 0,
                "reason": reasons,
                "p_value": band_pvalues(estimate.log_px, self.validation_scores_, self.thresholds_),
            },
            index=X.index if isinstance(X, pd.DataFrame) else None,
        )
        if sequential:
            frame["n_draws"] = np.asarray(estimate.n_draws, dtype=np.int64)
        deficit_frame = pd.DataFrame(deficits, columns=deficit_column_names(names), index=frame.index)
        explanation = pd.concat([frame, deficit_frame], axis=1)
        return (explanation, records) if return_records else explanation

    def drift_report(self, X, log_px=None, alpha=DEFAULT_ALPHA):
        """Test whether a batch differs from the calibration rows, and name the columns that moved.

        Four tests of the batch's log p(x) against ``validation_scores_``:
        the share below the band's lower edge, above its upper edge and below
        the calibration scores' 1st percentile against their expectation
        under no drift (exact beta-binomial tests: a clean row falls below the
        k-th of n calibration scores with probability k / (n + 1)), and a
        two-sided Mann-Whitney rank test; and
        one Mann-Whitney test per column of the rows' log p(x_j | z) against
        ``calibration_column_log_prob_``. Holm's correction keeps the chance of
        any false alarm at most ``alpha`` when the batch is exchangeable with
        the calibration rows (see :mod:`vaefilter.drift`). That is broken by
        calibration rows the model was trained or early-stopped on: calibrate
        on rows ``fit`` never saw for a false-alarm rate that holds.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            The batch's rows, or a random sample of them when ``log_px`` is
            given; their columns are tested.
        log_px : array-like of shape (n_rows,), optional
            log p(x) of all the batch's rows (``score_samples``), when ``X`` is
            a sample of them; default: the scores of ``X``. Every score must
            be finite, and there are at least as many as rows of ``X``.
        alpha : float, default=0.01
            Level of the alarm: about one false alarm in 100 clean batches.

        Returns
        -------
        report : vaefilter.drift.DriftReport
            ``drift`` (bool), ``p_value``, the edge tests (``below``,
            ``above``, ``tail``), ``rank_p_value``, ``median_shift_nats`` and
            ``columns``: the columns that moved with their median shift in
            nats, largest first.
        """
        X_model = self._validate_for_scoring(X)
        given = None if log_px is None else _checked_batch_scores(log_px, len(X_model))
        estimate = self._log_marginal(X_model, per_column=True)
        check_finite_scores(estimate.log_px)
        return batch_drift(
            estimate.log_px if given is None else given,
            self.validation_scores_,
            self.thresholds_,
            alpha=alpha,
            column_log_prob=estimate.column_log_prob,
            calibration_column_log_prob=getattr(self, "calibration_column_log_prob_", None),
            names=list(self.schema_.names),
        )

    def _condition_deficits(self, X_model, log_px, deficits, rows, n_draws=None):
        """Deficits of the likeliest culprits of ``rows``, given the rest of each row (in place).

        The posterior expectation of log p(x_j | z) blames every column that a
        wild value's pull on z makes unlikely: a fare x1000 of a third-class
        passenger moves z to first class, and pclass then looked as unlikely
        as the fare. For each row's ``CONDITIONED_CANDIDATES`` columns of
        largest deficit, the deficit becomes typical - log p(x_j | x_-j),
        with x_-j scored on draws that the blanked column does not pull.
        log p(x_j | x_-j) is at most the posterior expectation (Jensen), so a
        candidate's deficit only grows.
        """
        n_candidates = min(CONDITIONED_CANDIDATES, deficits.shape[1])
        candidates = np.argsort(-deficits[rows], axis=1, kind="stable")[:, :n_candidates]
        network = self._network()
        device = device_of(network)
        # under sequential decisions, each row at the draws its decision used
        draws = np.full(len(rows), self.n_importance_samples) if n_draws is None else np.asarray(n_draws)[rows]
        if CONDITIONED_DRAW_SHARE is not None:
            draws = np.minimum(draws, max(1, math.ceil(CONDITIONED_DRAW_SHARE * self.n_importance_samples)))
        # (row, candidate) slots to condition: all, or those whose posterior deficit reaches the floor
        wanted = np.ones(candidates.shape, dtype=bool)
        if CONDITIONED_MIN_DEFICIT is not None:
            wanted = np.take_along_axis(deficits[rows], candidates, 1) >= CONDITIONED_MIN_DEFICIT
        slot_rows, slot_columns = np.nonzero(wanted)
        slot_draws = draws[slot_rows]
        without = np.full(candidates.shape, np.nan)
        for k in np.unique(slot_draws):
            group = np.flatnonzero(slot_draws == k)
            # one left-out column per slot: the row's own draws for each (common random numbers)
            group_rows = to_tensor(X_model[rows[slot_rows[group]]], device)
            left_out = candidates[slot_rows[group], slot_columns[group]][:, None]

            def score(start, stop, activation_floats, group_rows=group_rows, left_out=left_out, k=int(k)):
                return log_marginal_without_columns(network, group_rows[start:stop], left_out[start:stop], k,
                                                    self.importance_seed_, activation_floats)

            without[slot_rows[group], slot_columns[group]] = np.concatenate(
                self._in_threads(score, len(group), device))[:, 0]
        conditional = log_px[rows, None] - without  # log p(x_j | x_-j); NaN where not conditioned
        # both estimates are lower bounds of the candidate's surprise (the
        # importance-sampled log p(x_-j) is biased low): keep the larger
        updated = deficits[rows]
        conditioned = self.column_typical_[candidates] - conditional
        posterior = np.take_along_axis(updated, candidates, 1)
        np.put_along_axis(updated, candidates, np.where(wanted, np.maximum(conditioned, posterior), posterior), 1)
        deficits[rows] = updated

    def relations(self, n=None):
        """The linear relations between columns the model learned (``column_relations`` 'linear' or 'numeric').

        Parameters
        ----------
        n : int, optional
            Only the ``n`` strongest.

        Returns
        -------
        relations : DataFrame with columns ``column``, ``parent``, ``coefficient``
            Between numeric columns, ``coefficient`` is B_jk of
            :mod:`vaefilter.model.relations`: how far one standardised unit
            of the parent's residual moves the column's location, in the
            column's standardised units. A discrete parent is named
            ``column=category``: its coefficient is how far that category,
            against the training mix, moves the column's location (in its
            standardised units) or a discrete column's logit (in nats).
            Largest magnitude first; empty without relations.
        """
        check_is_fitted(self)
        if n is not None:
            if isinstance(n, bool):
                raise TypeError(f"n must be a whole number >= 0, got {n!r}")
            n = check_scalar(n, "n", (Integral, np.integer), min_val=0)
        categories = {j: list(spec.categories) for j, spec in enumerate(self.schema_.columns) if spec.categories}
        rows = strongest_relations(self.network_.likelihood, list(self.schema_.names), n, categories)
        return pd.DataFrame(rows, columns=["column", "parent", "coefficient"])

    # ------------------------------------------------------- generative side
    def encode(self, X):
        """Mean and standard deviation of the posterior q(z | x) per row.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)

        Returns
        -------
        mean, std : ndarrays of shape (n_samples, latent_dim)
        """
        X_model = self._validate_for_scoring(X)
        network = self._network()
        device = device_of(network)
        mean, log_var = encode_in_passes(network, to_tensor(X_model, device))
        return to_numpy(mean), to_numpy((0.5 * log_var).exp())

    def transform(self, X):
        """Posterior means of z: the detector as a feature extractor.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)

        Returns
        -------
        Z : ndarray of shape (n_samples, latent_dim)
        """
        return self.encode(X)[0]

    @property
    def _n_features_out(self):
        # the fitted network's width: a later set_params(latent_dim=...) moves no fitted model
        return self.network_.latent_dim if hasattr(self, "network_") else self.latent_dim

    def decode(self, Z):
        """E[x | z] for latent points, in the training space.

        Categorical columns get their most probable category.

        Parameters
        ----------
        Z : array-like of shape (n_points, latent_dim)
            Finite latent points; one point may be given as a 1-D array, and
            with ``latent_dim=1`` a 1-D array is a column of points.

        Returns
        -------
        X : ndarray or DataFrame of shape (n_points, n_features)
            A DataFrame with the training columns when fitted on a DataFrame.
        """
        check_is_fitted(self)
        network = self._network()
        if np.ndim(Z) == 1:
            # one point of a latent space, or (latent_dim=1) a column of points
            Z = np.reshape(Z, (-1, 1) if network.latent_dim == 1 else (1, -1))
        Z = check_array(Z, dtype=np.float64, input_name="Z")
        if Z.shape[1] != network.latent_dim:
            raise ValueError(f"Z has {Z.shape[1]} columns, but this detector's latent space has "
                             f"latent_dim={network.latent_dim}")
        beyond = np.argwhere(np.abs(Z) > _FLOAT32_MAX)
        if len(beyond):
            row, column = beyond[0]
            raise ValueError(f"Z has a value beyond float32's range at row {row}, column {column} "
                             f"({Z[row, column]:g})")
        expected = to_numpy(network.expected_rows(to_tensor(Z, device_of(network))))
        bad = np.argwhere(~np.isfinite(expected))
        if len(bad):
            row, column = bad[0]
            raise ValueError(f"decode: the point at row {row} (largest |z| {np.abs(Z[row]).max():.3g}) gives a "
                             f"non-finite E[x | z] for column {self.schema_.names[column]!r}: it lies too far "
                             "outside the prior N(0, I) for float32")
        return self._to_training_space(expected)

    def sample(self, n_samples=1, random_state=None):
        """Generate rows from the model: z ~ N(0, I), then x ~ p(x | z).

        Parameters
        ----------
        n_samples : int, default=1
            Number of rows.
        random_state : int, RandomState instance or None, default=None
            Seed of the draws.

        Returns
        -------
        X : ndarray or DataFrame of shape (n_samples, n_features)
            In the training space: a DataFrame with the training columns and
            types when fitted on a DataFrame; missing cells where the model
            draws them.
        """
        check_is_fitted(self)
        if isinstance(n_samples, bool):
            raise TypeError("n_samples must be an int, got a bool")
        n_samples = check_scalar(n_samples, "n_samples", Integral, min_val=1)
        seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
        rows = self._network().generate(int(n_samples), int(seed))
        return self._to_training_space(to_numpy(rows))

    def _to_training_space(self, matrix):
        if hasattr(self, "feature_names_in_") or not self.schema_.is_numeric_only:
            return self.schema_.decode(matrix)
        return matrix

    @property
    def offset_(self):
        """The lower threshold, when the band has no upper side.

        Only then is ``decision_function`` a translation of ``score_samples``
        (``decision_function = score_samples - offset_``), as in scikit-learn's
        other outlier detectors.
        """
        check_is_fitted(self)
        lower, upper = self.thresholds_
        if lower is None or upper is not None:
            raise AttributeError("offset_ exists only for a lower-only band, e.g. threshold_percentiles=(1, None)")
        return lower

    # ---------------------------------------------------------- persistence
    def __getstate__(self):
        # a copy: object.__getstate__ may hand back the live __dict__
        state = dict(super().__getstate__())
        network = state.pop("network_", None)
        if network is not None:
            # a state dict on the CPU: loads anywhere, whatever device trained it
            state["_network_checkpoint"] = {
                "config": network.config(),
                "state_dict": {k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
            }
        return state

    def __setstate__(self, state):
        checkpoint = state.pop("_network_checkpoint", None)
        if "network_" in state or checkpoint is not None:
            for attribute in FITTED_STATE:
                if attribute.name not in state and attribute.default is not REQUIRED and attribute.default is not None:
                    state[attribute.name] = copy.deepcopy(attribute.default)
        for name, value in EARLIER_PARAMS.items():
            state.setdefault(name, value)
        super().__setstate__(state)
        if checkpoint is not None:
            network = VAENetwork.from_config(checkpoint["config"])
            network.load_state_dict(checkpoint["state_dict"])
            self.network_ = network.eval()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self.handle_missing == "model"
        tags.input_tags.categorical = True
        return tags
