"""Sequential decisions: spend importance draws where a row's decision needs them.

A row far inside or far outside the band is decided after a few draws; only
rows near an edge need all K. Every row starts with the first round of its K
draws (6 of 100); from those draws' weights come an estimate of log p(x) and its
uncertainty; rows clearly inside or clearly outside the band stop, the rest
go on in rounds up to K.

The draws of a round are the very draws a full-K run uses (see
:func:`vaefilter.scoring.row_noise.keyed_normal_at`), so a row that goes the
distance gets the full-K estimate, and every decision is taken from the
row's own weights: a row's decision and draws used do not depend on the rows
scored beside it. Where the posterior search gives a row a second proposal,
half of a full-K run's draws come from q and half from the Laplace Gaussian;
each round takes the same share of both halves, so its estimate, weighed by
the full-K mixture density, stays unbiased for p(x).

The estimate at k draws is a stochastic lower bound of log p(x) whose bias
shrinks with k, so "clearly" is calibrated, not assumed: at fit time the
held-out rows are scored at full K, recording each round's estimate, and the
margins are high quantiles of how far the full-K estimate rose above
(``rise``) or fell below (``fall``) the round's estimate, read from a
generalised Pareto fit to the tail (a few hundred rows do not reach the 0.999
quantile that the filter's 99.9%-of-decisions target asks for). A row stops at round
r when its distance to the edge exceeds that margin plus SE_FACTOR times
its own delta-method standard error, sqrt(1/ESS - 1/k), and its effective
sample size is at least MIN_STOP_ESS (unless no rise of its estimate could
change its decision: clearly above the upper edge, or clearly inside a band
with no upper edge).

Rows the posterior search would search first get a pilot: the first round
with q's weights alone. Where the pilot decides them and no rise of the
estimate could overturn the decision (clearly above the upper edge, or
clearly inside a band without one, by its own calibrated margin on the
held-out rows the search flags), the search is skipped; the others are
searched and scored as a full-K run scores them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from .._torch import reparameterize, to_numpy
from .heap import keep_freed_memory
from .marginal import (
    MarginalEstimate,
    activation_floats_for,
    encode_in_passes,
    fixed_shape_passes,
    rows_per_pass,
    rows_to_search,
    search_rows,
    weights_of_draws,
)
from .posterior_search import LaplaceProposal
from .row_noise import keyed_normal_at, row_keys

#: Cumulative shares of K scored by the rounds before the last (which takes
#: all K). At K=100: 6, 10, 30, then 100 draws. A small first round stops
#: the rows far from both edges cheaply (58-76% of the rows of six mixed
#: tables stop there). A further round at 60% of K took the draws per row
#: lower (titanic 18.8, fair 20.0, modechoice 40.6 at SE_FACTOR 1) but, with
#: the categories as parents, let one modechoice row of 835 stop at 60 draws
#: 0.66 nats below its full-K estimate, on the wrong side of the upper edge
#: (at SE_FACTOR 1 and 2): without it, 0 of 1080, 5000, 835 and 943 decisions
#: differ from full K on titanic, fair, modechoice and anes96, at 23.9, 26.9,
#: 53.9 and 17.8 draws per row (27.5, 31.0, 54.8, 23.3 with last round's 10,
#: 30, 100) -- chosen on those four (benchmarks/RESULTS.md, speed_round3_final).
ROUND_FRACTIONS = (0.05, 0.1, 0.3)
#: The rounds of model files whose margins were fitted for other
#: ROUND_FRACTIONS, and the SE_FACTOR they were measured with: such files
#: keep both, so their decisions do not change (10, 30, 100 at K=100 before
#: this round; 6, 10, 30, 60, 100 in this round's first merge).
EARLIER_ROUNDS = (((0.05, 0.1, 0.3, 0.6), 1.0), ((0.1, 0.3), 2.0))
#: Below this K every row takes all K draws: a round of K/10 draws would
#: hold too few draws for an effective sample size.
MIN_SEQUENTIAL_DRAWS = 20
#: A round of fewer draws is left out (at K = 20-40 the first share gives 2
#: draws): the smallest round the six tables above were measured with held 6.
MIN_ROUND_DRAWS = 4
#: Quantile of the rise and fall that sets a round's margin: the 99.9% of decisions
#: the filter must take as full K would (issue 16).
MARGIN_QUANTILE = 0.999
#: Above this quantile of the held-out rows' rise (fall), the tail is modelled (peaks over
#: threshold) and MARGIN_QUANTILE read from the model: 20-1,200 held-out rows do not reach a
#: 0.999 quantile. On 73,168 rows of 28 tuning fits (benchmarks/choose_margins.py), margins at
#: the empirical 0.999 quantile were exceeded by 0.56-0.68% of the rows per round (rise and
#: fall; 0.2% nominal), at an exponential tail's by 0.38-0.43%, at the generalised Pareto
#: tail of TAIL_SHAPE's by 0.20-0.24%. With SE_FACTOR, rows beyond the margin at some round (a
#: bound on the decisions that differ from full K, whatever the band) went from 0.167% (the
#: earlier empirical 0.995 rule) to 0.050% on the worst table of >= 1,000 rows, 0.053% to
#: 0.014% pooled, at 13.6 draws per row instead of 11.5 (RESULTS.md, sequential_margins_tail).
TAIL_FROM = 0.9
#: Shape of the generalised Pareto law of the excesses over the TAIL_FROM quantile: 0.154 by
#: maximum likelihood on the 42,450 excesses of the rows of 16 tuning fits (those with >= 60
#: held-out rows), each table's and round's scaled by their mean (tables resampled, 5-95%:
#: 0.143-0.164; the held-out rows' alone: 0.161): a heavier tail than the exponential's (0).
TAIL_SHAPE = 0.154
#: A row's own standard errors (delta method, from its effective sample
#: size) added to the calibrated margin. With the tail-model margins, 1.0 left 0.119% of
#: the rows of the worst tuning table (>= 1,000 rows) beyond the margin at some round, 2.0
#: 0.050% (under the 0.1% asked): the smallest of 1, 2, 2.5, 3 that passes (sequential_margins_tail).
SE_FACTOR = 2.0
#: Effective sample size below which a row never stops before its last round. A row whose
#: weights hang on one or two draws says nothing of the mass its draws missed, and its
#: delta-method error cannot exceed sqrt(1 - 1/k) (0.91 at 6 draws): trained on the 16-sample
#: bound, randhie had rows whose 6-draw estimate lay 95-448 nats below full K's at an ESS near 1,
#: far beyond any margin. Simulated on the margin rule's 15 tuning tables x 2 seeds
#: (benchmarks/choose_margins.py --ess-floors), the rows beyond margin + SE_FACTOR x se at some
#: round, worst table >= 1,000 rows, fell from 0.433% (no floor) to 0.367, 0.333, 0.133, 0.100 and
#: 0.067% at floors 1.5, 2, 3, 4 and 5, the decisions other than full K's from 34 of 146,336 to
#: 17, 13, 5, 3 and 0, at 24.7 -> 25.0 draws per row at 4; on the ELBO 1 of 146,336 at every
#: floor, 13.9 draws. 4 is the smallest floor that passes the margin rule's test (the bound
#: <= 0.1% pooled and on every table of >= 1,000 rows: 0.100% on randhie, 3 of its 3,000 rows).
#: Rows no rise could overturn are exempt (see beyond_any_rise). It costs most on rows outside
#: the band, where q fits worst: in benchmarks/check_sequential.py (report tables) unseen
#: digits took 10.4-13.2 draws per row before it and 19.7-22.8 with it, titanic's test rows
#: with planted faults 10.7-42.2 and 17.3-52.1, every decision equal to full K's before and after.
MIN_STOP_ESS = 4.0
#: Fewer held-out rows than this leave a margin infinite (that round never
#: stops a row): a quantile of a handful of rows says little about its tail.
MIN_MARGIN_ROWS = 20


@dataclass
class DecisionMargins:
    """Calibrated stopping margins, nats; ``rise[r]``/``fall[r]`` belong to the round of ``draws[r]`` draws."""

    draws: tuple
    rise: tuple
    fall: tuple
    pilot_rise: float
    pilot_fall: float

    def to_dict(self):
        return {"draws": list(self.draws), "rise": list(self.rise), "fall": list(self.fall),
                "pilot_rise": self.pilot_rise, "pilot_fall": self.pilot_fall}

    @classmethod
    def from_dict(cls, values):
        margins = cls(tuple(int(d) for d in values["draws"]), tuple(float(r) for r in values["rise"]),
                      tuple(float(f) for f in values["fall"]), float(values["pilot_rise"]),
                      float(values["pilot_fall"]))
        if not (len(margins.draws) == len(margins.rise) == len(margins.fall)):
            raise ValueError("decision margins need one rise and one fall per round")
        values_ = (*margins.rise, *margins.fall, margins.pilot_rise, margins.pilot_fall)
        if any(math.isnan(v) or v < 0 for v in values_):
            raise ValueError("decision margins must be numbers >= 0 (or infinite)")
        return margins


def draw_rounds(n_draws, fractions=None):
    """The cumulative draw indices (into the full K) of each round; the last round holds all K.

    Each round takes the same share of the first K // 2 draws (q's, under the
    posterior search) and of the rest (the Laplace Gaussian's). Rounds that
    would hold no more draws than the one before are left out.
    """
    if n_draws < MIN_SEQUENTIAL_DRAWS:
        return [torch.arange(n_draws)]
    first = n_draws // 2
    rounds = []
    for fraction in ROUND_FRACTIONS if fractions is None else fractions:
        a, b = math.ceil(fraction * first), math.ceil(fraction * (n_draws - first))
        if a + b < MIN_ROUND_DRAWS or a + b >= n_draws or (rounds and a + b <= rounds[-1].numel()):
            continue
        rounds.append(torch.cat([torch.arange(a), first + torch.arange(b)]))
    rounds.append(torch.arange(n_draws))
    return rounds


def rounds_for(n_draws, margins):
    """(rounds, standard errors added to the margins) that ``margins`` were calibrated for: these
    rounds or earlier ones; all K in one round for margins of another K or none."""
    if margins is None:
        return [torch.arange(n_draws)], SE_FACTOR
    for fractions, se_factor in ((ROUND_FRACTIONS, SE_FACTOR), *EARLIER_ROUNDS):
        rounds = draw_rounds(n_draws, fractions)
        if tuple(r.numel() for r in rounds[:-1]) == tuple(margins.draws):
            return rounds, se_factor
    return [torch.arange(n_draws)], SE_FACTOR  # margins calibrated for another K: no early stops


@dataclass
class _Rows:
    """Per-row state of a sequential run (tensors over the rows of X)."""

    weights: torch.Tensor  # (n, K), -inf where not drawn yet
    columns: list  # per round: (log-sum of the round's weights (n,), weighted column mean (n, F))


def _draw_weights(network, x, mean, log_var, noise, draws, n_draws, laplace=None, per_column=False):
    """Log-weights of shape (rows, len(draws)) of the given draws, as a full-K run weighs them.

    Rows with ``laplace`` take their draws from index K // 2 on from it, and
    every draw is weighed by the full-K mixture density.
    """
    z = reparameterize(mean, log_var, noise)
    log_q = network.log_prior(noise) - 0.5 * log_var.sum(-1, keepdim=True)
    if laplace is not None:
        first = n_draws // 2
        from_laplace = (draws >= first).to(z.device).view(1, -1, 1)
        z = torch.where(from_laplace, laplace.sample(noise), z)
        std = (0.5 * log_var).exp().unsqueeze(1)
        log_encoder = network.log_prior((z - mean.unsqueeze(1)) / std) - 0.5 * log_var.sum(-1, keepdim=True)
        shares = math.log(first / n_draws), math.log(1 - first / n_draws)
        log_q = torch.logaddexp(shares[0] + log_encoder, shares[1] + laplace.log_density(z))
    return weights_of_draws(network, x, z, log_q, per_column)


def _score_draws(network, X, mean, log_var, keys, rows, draws, n_draws, state, activation_floats,
                 per_column, laplace=None):
    """Weights of ``draws`` for ``rows`` into ``state``, in fixed-shape passes."""
    if not rows.numel():
        return
    pass_rows = rows_per_pass(draws.numel(), network.widest_hidden_layer, activation_floats)
    aligned = [mean[rows], log_var[rows], keys[rows]]
    if laplace is not None:
        aligned += list(laplace.tensors())
    round_sum = torch.full((rows.numel(),), -math.inf, device=X.device)
    round_columns = torch.zeros(rows.numel(), network.likelihood.n_features, device=X.device) if per_column else None
    for start, stop, batch, batch_mean, batch_log_var, batch_keys, *batch_laplace in fixed_shape_passes(
        X[rows], pass_rows, *aligned
    ):
        noise = keyed_normal_at(batch_keys, draws, n_draws, network.latent_dim)
        proposal = LaplaceProposal(*batch_laplace) if batch_laplace else None
        w, columns = _draw_weights(network, batch, batch_mean, batch_log_var, noise, draws, n_draws, proposal,
                                   per_column)
        w = w[: stop - start]
        state.weights[rows[start:stop].unsqueeze(1), draws.to(X.device).unsqueeze(0)] = w
        if per_column:
            round_sum[start:stop] = torch.logsumexp(w, dim=1)
            posterior = torch.softmax(w, dim=1).unsqueeze(-1)
            round_columns[start:stop] = (posterior * columns[: stop - start]).sum(1)
    if per_column:
        state.columns.append((rows, draws, round_sum, round_columns))


def _estimate(weights, draws):
    """(log p(x) estimate, delta-method standard error of it) from the weights of ``draws``."""
    w = weights[:, draws.to(weights.device)]
    log_sum = torch.logsumexp(w, dim=1)
    log_px = log_sum - math.log(draws.numel())
    ess = torch.exp(2.0 * log_sum - torch.logsumexp(2.0 * w, dim=1))
    se = torch.sqrt((1.0 / ess - 1.0 / draws.numel()).clamp(min=0.0))
    return log_px, se, ess


def beyond_any_rise(log_px, se, thresholds, fall, se_factor=SE_FACTOR):
    """Rows whose decision no rise of the estimate could overturn: clearly above the upper edge,
    or clearly inside a band without one (``fall`` and ``se`` as in :func:`decided`).

    The estimate at k draws is a stochastic lower bound: the draws' missed mass can only make the
    full-K estimate higher, and it is these rises that MIN_STOP_ESS guards against, so such rows
    may stop at any effective sample size.
    """
    lower, upper = thresholds
    down = fall + se_factor * se
    if upper is not None:
        return log_px > upper + down
    if lower is not None:
        return log_px - lower > down
    return torch.ones_like(log_px, dtype=torch.bool)


def decided(log_px, se, thresholds, rise, fall, inside_only=False, se_factor=SE_FACTOR):
    """Rows whose decision is clear: inside or outside the band by more than the margins.

    ``rise`` (``fall``) bounds how far the full-K estimate may lie above
    (below) this one; a row's own ``se`` widens both by ``se_factor``. With
    ``inside_only`` only rows clearly inside stop.
    """
    lower, upper = thresholds
    up, down = rise + se_factor * se, fall + se_factor * se
    inside = torch.ones_like(log_px, dtype=torch.bool)
    outside = torch.zeros_like(inside)
    if lower is not None:
        inside &= log_px - lower > down
        outside |= log_px < lower - up
    if upper is not None:
        inside &= upper - log_px > up
        outside |= log_px > upper + down
    return inside if inside_only else inside | outside


@dataclass
class SequentialRecord:
    """Every round's estimate of held-out rows scored at full K (for :func:`fit_margins`)."""

    full: np.ndarray  # (n,) full-K estimate
    rounds: np.ndarray  # (n_rounds - 1, n) the estimate after each round before the last
    pilot: np.ndarray  # (n,) q-only first-round estimate (NaN where the search would not fire)
    draws: tuple
    se: np.ndarray = None  # (n_rounds - 1, n) the delta-method standard error after each round


def sequential_log_marginal(network, X, n_importance_samples, seed, thresholds, margins, search_steps=0,
                            per_column=False, activation_floats=None, record=False, search_threshold=None):
    """log p(x) of every row of ``X``, each row stopping once its decision is clear.

    Parameters
    ----------
    network, X, n_importance_samples, seed, per_column, search_steps, activation_floats, search_threshold :
        As :func:`vaefilter.scoring.marginal.estimate_log_marginal`.
    thresholds : tuple of (float or None, float or None)
        The band.
    margins : DecisionMargins or None
        Calibrated margins (see :func:`fit_margins`); None takes all K draws for every row.
    record : bool
        Score every row at full K and return a :class:`SequentialRecord` of each round's estimate.

    Returns
    -------
    MarginalEstimate (with ``n_draws``), or SequentialRecord when ``record``.
    """
    if activation_floats is None:
        activation_floats = activation_floats_for(X.device)
    if X.device.type == "cpu":
        keep_freed_memory()
    K = n_importance_samples
    rounds, se_factor = (draw_rounds(K), SE_FACTOR) if record else rounds_for(K, margins)
    n = X.shape[0]
    device = X.device
    log_px = torch.full((n,), math.nan, device=device)
    n_draws = torch.full((n,), K, dtype=torch.int64, device=device)
    state = _Rows(torch.full((n, K), -math.inf, device=device), [])
    searched = torch.zeros(n, dtype=torch.bool, device=device)
    recorded = np.full((len(rounds) - 1, n), np.nan)
    recorded_se = np.full_like(recorded, np.nan)
    pilot = np.full(n, np.nan)
    with torch.no_grad():
        keys = row_keys(X, seed)
        mean, log_var = encode_in_passes(network, X)
        flagged = torch.zeros(n, dtype=torch.bool, device=device)
        if search_steps and K > 1:
            flagged = rows_to_search(network, X, mean, log_var, activation_floats, search_threshold)
        laplace = {}  # row index tensor -> proposal, for the rows searched
        active = torch.arange(n, device=device)
        previous = torch.arange(0)
        for r, draws in enumerate(rounds):
            last = r == len(rounds) - 1
            new = draws[~torch.isin(draws, previous)] if previous.numel() else draws
            plain = active[~searched[active]]
            _score_draws(network, X, mean, log_var, keys, plain, new, K, state, activation_floats, per_column)
            rows_s = active[searched[active]]
            if rows_s.numel():
                _score_draws(network, X, mean, log_var, keys, rows_s, new, K, state, activation_floats, per_column,
                             _proposal_of(laplace, rows_s))
            if r == 0 and flagged.any():
                # the pilot: flagged rows' first round with q's weights; undecided ones are searched
                pilot_rows = active[flagged[active]]
                estimate, se, _ = _estimate(state.weights[pilot_rows], draws)
                pilot[pilot_rows.cpu().numpy()] = to_numpy(estimate)
                if record:
                    stop = torch.zeros_like(estimate, dtype=torch.bool)
                elif margins is None or last:
                    stop = torch.zeros_like(estimate, dtype=torch.bool)
                else:
                    # Where the encoder misses a row (the search's flag), its q-only estimate can
                    # lie far below the full-K one, further than held-out rows show (unseen digits:
                    # 12-20 nats below, against a 5.7-nat margin; 11 against 6.0 on another split).
                    # A low pilot then proves nothing either way: not that the row is below the
                    # lower edge, nor that it stays below an upper edge. It may stop only rows whose
                    # decision no rise can overturn (clearly above the upper edge, or clearly inside a
                    # band without one: no ESS floor either); the search's draws decide the rest.
                    stop = beyond_any_rise(estimate, se, thresholds, margins.pilot_fall, se_factor)
                log_px[pilot_rows[stop]] = estimate[stop]
                n_draws[pilot_rows[stop]] = draws.numel()
                to_search = pilot_rows[~stop]
                if to_search.numel():
                    found = search_rows(network, X[to_search], mean[to_search], log_var[to_search], search_steps,
                                        activation_floats)
                    laplace = {"index": to_search, "proposal": found}
                    searched[to_search] = True
                    state.weights[to_search] = -math.inf
                    if per_column:
                        state.columns = [(rws[~torch.isin(rws, to_search)], d, s[~torch.isin(rws, to_search)],
                                          c[~torch.isin(rws, to_search)]) for rws, d, s, c in state.columns]
                    _score_draws(network, X, mean, log_var, keys, to_search, draws, K, state, activation_floats,
                                 per_column, found)
                done = torch.zeros(n, dtype=torch.bool, device=device)
                done[pilot_rows[stop]] = True
                active = active[~done[active]]
            estimate, se, ess = _estimate(state.weights[active], draws)
            if last:
                log_px[active] = estimate
                n_draws[active] = draws.numel()
                break
            if record:
                recorded[r, active.cpu().numpy()] = to_numpy(estimate)
                recorded_se[r, active.cpu().numpy()] = to_numpy(se)
                previous = draws
                continue
            stop = decided(estimate, se, thresholds, margins.rise[r], margins.fall[r], se_factor=se_factor)
            stop &= (ess >= MIN_STOP_ESS) | beyond_any_rise(estimate, se, thresholds, margins.fall[r], se_factor)
            log_px[active[stop]] = estimate[stop]
            n_draws[active[stop]] = draws.numel()
            active = active[~stop]
            previous = draws
            if not active.numel():
                break
        column_log_prob = _combine_columns(state.columns, n, network.likelihood.n_features, n_draws,
                                           device) if per_column else None
    if record:
        return SequentialRecord(to_numpy(log_px), recorded, pilot, tuple(d.numel() for d in rounds[:-1]), recorded_se)
    return MarginalEstimate(
        to_numpy(log_px),
        to_numpy(_ess_at(state.weights, n_draws, rounds)),
        None if column_log_prob is None else to_numpy(column_log_prob),
        searched.cpu().numpy() if search_steps and K > 1 else None,
        n_draws.cpu().numpy(),
    )


def _proposal_of(laplace, rows):
    """The Laplace proposals of ``rows`` (all among the searched rows)."""
    index = laplace["index"]
    where = torch.searchsorted(index, rows)
    return LaplaceProposal(*(t[where] for t in laplace["proposal"].tensors()))


def _ess_at(weights, n_draws, rounds):
    """Each row's effective sample size over the draws it used."""
    ess = torch.empty(weights.shape[0], device=weights.device)
    for draws in rounds:
        rows = torch.nonzero(n_draws == draws.numel()).squeeze(1)
        if rows.numel():
            ess[rows] = _estimate(weights[rows], draws)[2]
    return ess


def _combine_columns(parts, n, n_features, n_draws, device):
    """Posterior expectation of each column over each row's draws, from the rounds' partial sums."""
    total = torch.full((n,), -math.inf, device=device)
    for rows, _, log_sum, _ in parts:
        total[rows] = torch.logaddexp(total[rows], log_sum)
    out = torch.zeros(n, n_features, device=device)
    for rows, _, log_sum, columns in parts:
        out[rows] += torch.exp(log_sum - total[rows]).unsqueeze(1) * columns
    return out


def concatenate_records(records):
    """One :class:`SequentialRecord` of the rows of several (the same rounds), e.g. of cross-fitted folds."""
    draws = {r.draws for r in records}
    if len(draws) != 1:
        raise ValueError(f"records of different rounds cannot be joined: {sorted(draws)}")
    return SequentialRecord(np.concatenate([r.full for r in records]),
                            np.concatenate([r.rounds for r in records], axis=1),
                            np.concatenate([r.pilot for r in records]), draws.pop(),
                            np.concatenate([r.se for r in records], axis=1))


def tail_quantile(values, quantile=MARGIN_QUANTILE, tail_from=TAIL_FROM, shape=TAIL_SHAPE):
    """The ``quantile`` of ``values`` (>= 0), read from a generalised Pareto fit to their upper tail.

    Peaks over threshold: the excesses over the ``tail_from`` quantile ``u``
    follow a generalised Pareto law of ``shape`` (0: the exponential), its
    scale ``mean(excess) * (1 - shape)`` (the law's mean is scale / (1 -
    shape)); the margin is ``u`` plus the law's quantile at the share
    ``(1 - quantile) / (1 - tail_from)`` of the tail. Infinite for fewer
    than MIN_MARGIN_ROWS finite values.
    """
    values = values[np.isfinite(values)]
    if values.size < MIN_MARGIN_ROWS:
        return math.inf
    threshold = float(np.quantile(values, tail_from))
    excess = values[values > threshold] - threshold
    if not excess.size or excess.mean() <= 0:
        return max(threshold, 0.0)
    scale = float(excess.mean()) * (1 - shape)
    tail = stats.genpareto.isf((1 - quantile) / (1 - tail_from), shape, scale=scale)
    return max(threshold + float(tail), 0.0)


def fit_margins(record):
    """The :class:`DecisionMargins` of a :class:`SequentialRecord` of held-out rows."""
    rise = tuple(tail_quantile(record.full - estimate) for estimate in record.rounds)
    fall = tuple(tail_quantile(estimate - record.full) for estimate in record.rounds)
    flagged = np.isfinite(record.pilot)
    return DecisionMargins(record.draws, rise, fall, tail_quantile(record.full[flagged] - record.pilot[flagged]),
                           tail_quantile(record.pilot[flagged] - record.full[flagged]))
