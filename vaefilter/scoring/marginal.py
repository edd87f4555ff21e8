"""Importance-sampled log p(x) with the encoder q(z|x) as proposal.

For each row, with z_k = mu(x) + sigma(x) * eps_k,

    w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x)
    log p(x) ~= logsumexp_k(w_k) - log K

The estimate of p(x) is unbiased; that of log p(x) is a stochastic lower bound
whose gap shrinks as K grows (K = 1 is the ELBO).

The K standard-normal draws ``eps`` of a row are derived from the row's own
bytes and a seed (see :mod:`vaefilter.scoring.row_noise`): a row's score is then a
deterministic function of that row alone, independent of which rows are
scored with it or in what order, while different rows get independent draws.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from .heap import keep_freed_memory
from .._torch import may_be_true, reparameterize, to_numpy
from .posterior_search import (
    SEARCH_THRESHOLD,
    LaplaceProposal,
    encoder_as_laplace,
    laplace_proposals,
    misplacement,
    mixture_draws,
)
from .row_noise import keyed_normal, row_keys

# Floats per thread in one hidden activation of a decoder pass (rows x K x
# width). On CPU every element-wise op (bias, SiLU, softplus, log) streams the
# whole activation through memory, so passes that stay in cache score faster:
# 2^20 floats (8192 draws of width 128) per thread measured 36 GFLOP/s on one
# thread against 22-27 for 2^22 floats. A GPU wants the opposite: passes large
# enough to fill it.
CPU_ACTIVATION_FLOATS_PER_THREAD = 2**20
CUDA_ACTIVATION_FLOATS = 2**25

# A row's score is a function of that row alone, up to float32 rounding: BLAS
# picks kernels (and summation orders) by matrix shape, so a row can differ by
# ~1e-7 relative between batches. Below 8 rows CPU kernels switch to a
# matrix-vector path with larger differences, so short passes are padded.
# cuBLAS picks by the whole shape, and its choices differ in the last bits for
# any change of row count (seen on an H200), so on a GPU every pass is padded
# to the full pass size; a pass there costs about a millisecond.
MIN_ROWS_PER_PASS = 8
MAX_ROWS_PER_PASS = 4096
# The posterior search runs a few dozen small steps per pass: on a GPU, where
# each step costs its kernel launches whatever its size, larger passes help
# (H200, 1e5 x 30, 37% of rows searched in float32: 0.17-0.22 s at 32768 rows
# against 0.28-0.30 s at 4096).
MAX_ROWS_PER_SEARCH_PASS = 32768
# Relative distance to SEARCH_THRESHOLD within which the CPU's float32 test
# of a row is redone in float64: 5e4 times float32's rounding, and 0-0.1% of
# the rows of bench_speed's default-fitted models (8% after 3 epochs).
AMBIGUOUS_BAND = 0.05


@dataclass
class MarginalEstimate:
    """Per-row results of the importance sampler.

    Attributes
    ----------
    log_px : ndarray of shape (n_samples,)
        Estimated log p(x), nats per row.
    effective_sample_size : ndarray of shape (n_samples,)
        (sum w)^2 / sum w^2 of the normalised weights, between 1 and K: near K
        the proposal matches the posterior; near 1 one draw dominates and the
        estimate is less reliable.
    column_log_prob : ndarray of shape (n_samples, n_features) or None
        Posterior expectation of log p(x_j | z) per column (self-normalised
        importance weights): which columns the model finds unlikely.
    searched : ndarray of bool of shape (n_samples,) or None
        Rows whose second proposal came from the posterior search (see
        :mod:`vaefilter.scoring.posterior_search`); None when the search is off.
    n_draws : ndarray of int of shape (n_samples,) or None
        Importance draws each row's estimate used: K for every row, except
        under sequential decisions (:mod:`vaefilter.scoring.sequential`), where rows
        decided early stop with fewer; None when every row used K.
    """

    log_px: np.ndarray
    effective_sample_size: np.ndarray
    column_log_prob: np.ndarray | None = None
    searched: np.ndarray | None = None
    n_draws: np.ndarray | None = None


def concatenate_estimates(estimates):
    """One :class:`MarginalEstimate` of the rows of several, in order (e.g. slices scored in threads)."""
    if len(estimates) == 1:
        return estimates[0]

    def joined(name):
        parts = [getattr(e, name) for e in estimates]
        return None if any(p is None for p in parts) else np.concatenate(parts)

    return MarginalEstimate(*(joined(name) for name in
                              ("log_px", "effective_sample_size", "column_log_prob", "searched", "n_draws")))


def log_weights(network, x, noise, per_column=False, laplace=None, searched=None):
    """Importance log-weights of shape (n_rows, K) for a batch of rows.

    ``noise`` holds standard-normal draws of shape (n_rows, K, latent_dim).
    With ``per_column``, also log p(x_j | z_k) of shape (n_rows, K, n_features).
    With ``laplace`` (a :class:`LaplaceProposal` per row, see
    :func:`search_in_passes`), the second half of the draws of the rows
    marked in ``searched`` comes from it.
    """
    mean, log_var = network.encode(x)
    z = reparameterize(mean, log_var, noise)
    # (z - mean) / std is exactly the noise, so q's density needs no division
    log_q = network.log_prior(noise) - 0.5 * log_var.sum(-1, keepdim=True)
    if laplace is not None and noise.shape[1] > 1 and may_be_true(searched):
        z, log_q = _with_mixture_draws(network, z, log_q, mean, log_var, laplace, noise, searched)
    return weights_of_draws(network, x, z, log_q, per_column)


def weights_of_draws(network, x, z, log_q, per_column=False):
    """Log importance weights log p(x | z) + log p(z) - log q(z) of draws ``z`` (rows x draws x latent)
    whose proposal log-density is ``log_q``; with ``per_column``, also the per-column log p(x_j | z)."""
    params = network.decode(z)
    if per_column:
        columns = network.likelihood.column_log_prob(params, x.unsqueeze(1))
        log_px_given_z = columns.sum(-1)
    else:
        columns, log_px_given_z = None, network.likelihood.log_prob(params, x.unsqueeze(1))
    return log_px_given_z + network.log_prior(z) - log_q, columns


def _with_mixture_draws(network, z, log_q, mean, log_var, laplace, noise, searched):
    """``z`` and ``log_q`` with the searched rows' draws from the two-component proposal.

    Rows not searched keep exactly their plain draws, whatever else is in the
    pass. On the CPU only the searched rows are computed (a few per pass where
    few are searched); on a GPU all rows are, to keep one shape per pass.
    """
    if searched.device.type == "cuda":
        mixed_z, mixed_log_q = mixture_draws(network, mean, log_var, laplace, noise)
        return torch.where(searched.view(-1, 1, 1), mixed_z, z), torch.where(searched.view(-1, 1), mixed_log_q, log_q)
    rows = torch.nonzero(searched).squeeze(1)
    subset = LaplaceProposal(*(t[rows] for t in laplace.tensors()))
    z[rows], log_q[rows] = mixture_draws(network, mean[rows], log_var[rows], subset, noise[rows])
    return z, log_q


def _padded(x, n_rows):
    missing = n_rows - x.shape[0]
    if missing <= 0:
        return x
    return torch.cat([x, x[:1].expand(missing, *x.shape[1:])])


def fixed_shape_passes(X, rows, *aligned):
    """Yield ``(start, stop, batch, *aligned_batches)`` over ``X`` in passes of ``rows`` rows.

    Each batch is padded by repeating its first row, for stable rounding (see
    MIN_ROWS_PER_PASS); tensors in ``aligned`` (one entry per row of X) are
    cut and padded alike. Results for rows ``stop - start`` onwards are to be
    dropped.
    """
    pad_to = rows if X.device.type == "cuda" else MIN_ROWS_PER_PASS
    for start in range(0, X.shape[0], rows):
        stop = min(start + rows, X.shape[0])
        yield (start, stop, *(_padded(t[start:stop], pad_to) for t in (X, *aligned)))


def search_in_passes(network, X, max_steps, activation_floats, search_threshold=None):
    """Each row's second proposal: the Laplace Gaussian where the encoder looks misplaced, else q.

    Returns the :class:`LaplaceProposal` of every row and a boolean mask of
    the rows searched (misplacement above ``search_threshold``, default
    SEARCH_THRESHOLD). The Hessian's latent_dim tangents play the part of K
    draws in sizing the search's passes.
    """
    mean, log_var = encode_in_passes(network, X)
    proposal = encoder_as_laplace(mean, log_var)
    searched = rows_to_search(network, X, mean, log_var, activation_floats, search_threshold)
    rows = torch.nonzero(searched).squeeze(1)
    if rows.numel():
        found = search_rows(network, X[rows], mean[rows], log_var[rows], max_steps, activation_floats)
        for buffer, part in zip(proposal.tensors(), found.tensors()):
            buffer[rows] = part.to(buffer.dtype)
    return proposal, searched


def search_proposals(network, X, max_steps, activation_floats=None, search_threshold=None):
    """:func:`search_in_passes` on its own, for :func:`estimate_log_marginal`'s ``search``."""
    if activation_floats is None:
        activation_floats = activation_floats_for(X.device)
    # no_grad, not inference_mode: the search differentiates through the decoder
    with torch.no_grad():
        return search_in_passes(network, X, max_steps, activation_floats, search_threshold)


def _search_pass_rows(network, activation_floats):
    return rows_per_pass(network.latent_dim, network.widest_hidden_layer, activation_floats,
                         max_rows=MAX_ROWS_PER_SEARCH_PASS)


def _flag_pass_rows(network, activation_floats):
    # The flag test evaluates one latent point per row, not the Hessian's
    # latent_dim tangents, so its passes are sized as for K = 1. Its many small
    # per-pass ops made it cost 677 ms per 16,384 titanic rows in 2048-row
    # passes against 255 ms in one pass (2 threads), with the same floats.
    return rows_per_pass(1, network.widest_hidden_layer, activation_floats, max_rows=MAX_ROWS_PER_SEARCH_PASS)


def rows_to_search(network, X, mean, log_var, activation_floats, search_threshold=None):
    """The boolean mask of the rows of ``X`` whose encoder mean looks misplaced (see :mod:`.posterior_search`):
    misplacement above ``search_threshold`` (default SEARCH_THRESHOLD)."""
    threshold = SEARCH_THRESHOLD if search_threshold is None else float(search_threshold)
    return _rows_to_search(network, X, mean, log_var, _flag_pass_rows(network, activation_floats), threshold)


def row_misplacement(network, X, activation_floats=None):
    """The flag's statistic (see :func:`~vaefilter.scoring.posterior_search.misplacement`) of every row, in float32."""
    if activation_floats is None:
        activation_floats = activation_floats_for(X.device)
    with torch.no_grad():
        mean, log_var = encode_in_passes(network, X)
        return _misplacement_in_passes(network, X, mean, log_var, _flag_pass_rows(network, activation_floats))


def search_rows(network, X, mean, log_var, max_steps, activation_floats):
    """The :class:`LaplaceProposal` of every row of ``X``, started at the encoder's ``mean``.

    The first step follows the gradient scaled by the encoder's variance
    ``exp(log_var)``; Newton's method takes over from there (see
    :func:`~vaefilter.scoring.posterior_search.laplace_proposals`).
    """
    pass_rows = _search_pass_rows(network, activation_floats)
    # rows still moving are padded as every pass is (see MIN_ROWS_PER_PASS)
    min_rows = pass_rows if X.device.type == "cuda" else MIN_ROWS_PER_PASS
    search_network, X_rows, mean_rows, variance_rows = _in_search_precision(network, X, mean, log_var.exp())
    proposal = encoder_as_laplace(mean, torch.zeros_like(mean))
    for start, stop, batch, batch_mean, batch_variance in fixed_shape_passes(X_rows, pass_rows, mean_rows,
                                                                             variance_rows):
        found = laplace_proposals(search_network, batch, batch_mean, max_steps, min_rows, batch_variance)
        for buffer, part in zip(proposal.tensors(), found.tensors()):
            buffer[start:stop] = part[: stop - start].to(buffer.dtype)
    return proposal


def _rows_to_search(network, X, mean, log_var, pass_rows, threshold):
    """The mask of rows whose encoder mean looks misplaced: misplacement above ``threshold``.

    The test runs in float32. Its rounding depends on the rows beside a row
    (~1e-6 relative, see _in_search_precision), which could only flip rows
    whose misplacement lies that close to the threshold: on the CPU those
    within AMBIGUOUS_BAND of it are decided again in float64. In float64
    for every row, the test took 8-12% of scoring time at 10 features.
    """
    misplaced = _misplacement_in_passes(network, X, mean, log_var, pass_rows)
    searched = misplaced > threshold
    if X.device.type == "cuda":
        return searched
    close = torch.nonzero((misplaced - threshold).abs() <= AMBIGUOUS_BAND * threshold).squeeze(1)
    if close.numel():
        retest = _in_search_precision(network, X[close], mean[close], log_var[close])
        searched[close] = _misplacement_in_passes(*retest, pass_rows) > threshold
    return searched


def _misplacement_in_passes(network, X, mean, log_var, pass_rows):
    misplaced = torch.empty(X.shape[0], dtype=X.dtype, device=X.device)
    for start, stop, batch, batch_mean, batch_log_var in fixed_shape_passes(X, pass_rows, mean, log_var):
        misplaced[start:stop] = misplacement(network, batch, batch_mean, batch_log_var)[: stop - start]
    return misplaced


def _in_search_precision(network, *tensors):
    """The network and tensors in the precision the posterior search runs in.

    On the CPU, the rounding of autograd's matmuls depends on the number of
    rows and on a row's place among them (seen at 9 and 16 rows), and Newton's
    method carries such differences into the mode: 1e-5 in float32, enough to
    change a score's seventh digit with the rows scored beside it. In float64
    they are ~1e-15 and vanish when the result is rounded to float32. On a GPU
    the search stays in float32 with every pass at one fixed shape: float64
    there ran the test suite's 8 parallel workers out of memory on an H200.
    """
    if tensors[0].device.type == "cuda":
        return (network, *tensors)
    return (copy.deepcopy(network).double(), *(t.double() for t in tensors))


def encode_in_passes(network, X):
    """Posterior mean and log-variance of every row of ``X``, each row independent of the others."""
    mean = torch.empty(X.shape[0], network.latent_dim, device=X.device)
    log_var = torch.empty_like(mean)
    with torch.inference_mode():
        for start, stop, batch in fixed_shape_passes(X, MAX_ROWS_PER_PASS):
            batch_mean, batch_log_var = network.encode(batch)
            mean[start:stop] = batch_mean[: stop - start]
            log_var[start:stop] = batch_log_var[: stop - start]
    return mean, log_var


def activation_floats_for(device):
    """The activation budget of one decoder pass on ``device``."""
    if torch.device(device).type == "cuda":
        return CUDA_ACTIVATION_FLOATS
    return CPU_ACTIVATION_FLOATS_PER_THREAD * torch.get_num_threads()


def rows_per_pass(n_importance_samples, hidden_width, activation_floats=CPU_ACTIVATION_FLOATS_PER_THREAD,
                  max_rows=MAX_ROWS_PER_PASS):
    """Rows per encoder/decoder pass: a function of the model, K and the device, never of the input."""
    draws = activation_floats // max(int(hidden_width), 1)
    return int(np.clip(draws // n_importance_samples, MIN_ROWS_PER_PASS, max_rows))


def estimate_log_marginal(
    network, X, n_importance_samples, seed, activation_floats=None, per_column=False, search_steps=0,
    search_threshold=None, search=None,
):
    """Importance-sampled log p(x) for every row of ``X``.

    Parameters
    ----------
    network : VAENetwork
        The fitted model, in eval mode.
    X : torch.Tensor of shape (n_samples, n_features)
        Model matrix on the network's device.
    n_importance_samples : int
        K, draws from q(z|x) per row.
    seed : int
        Seed of the per-row draws (see :func:`vaefilter.scoring.row_noise.row_normal`).
    activation_floats : int, optional
        Upper bound on rows x K x width of the widest hidden decoder
        activation in one pass; by default sized for the device of ``X``.
    per_column : bool
        Also compute the posterior expectation of each column's log p(x_j | z).
    search_steps : int
        At most this many Newton steps towards each row's posterior mode, where
        the Laplace approximation becomes a second proposal (see
        :mod:`vaefilter.scoring.posterior_search`); 0 samples from q(z|x) alone.
    search_threshold : float, optional
        Rows whose misplacement exceeds it are searched; default
        SEARCH_THRESHOLD (a fitted model keeps its own, ``search_threshold_``).
    search : tuple, optional
        ``(proposals, searched)`` of these rows from :func:`search_proposals`,
        to score them under several seeds without searching them again (the
        search does not depend on the seed).

    Returns
    -------
    MarginalEstimate
    """
    if activation_floats is None:
        activation_floats = activation_floats_for(X.device)
    if X.device.type == "cpu":
        keep_freed_memory()
    rows = rows_per_pass(n_importance_samples, network.widest_hidden_layer, activation_floats)
    n_samples, n_features = X.shape[0], network.likelihood.n_features
    # Results go into buffers allocated up front. Appending small per-pass
    # tensors instead left them between the passes' freed temporaries, and
    # glibc's heap then grew by up to 900 MB over 65,536 rows (measured RSS).
    log_px = torch.empty(n_samples, dtype=torch.float32, device=X.device)
    ess = torch.empty_like(log_px)
    column_log_prob = torch.empty(n_samples, n_features, device=X.device) if per_column else None
    # no_grad rather than inference_mode: the posterior search in this block
    # differentiates through the decoder
    with torch.no_grad():
        # hashed once for all rows: per pass, the column-by-column hash was
        # hundreds of tiny ops (a quarter of scoring time at 200 features)
        keys = row_keys(X, seed)
        laplace, searched = None, None
        if search_steps and n_importance_samples > 1:
            laplace, searched = search if search is not None else search_in_passes(
                network, X, search_steps, activation_floats, search_threshold)
        aligned = (keys,) if laplace is None else (keys, searched, *laplace.tensors())
        for start, stop, padded, padded_keys, *padded_search in fixed_shape_passes(X, rows, *aligned):
            noise = keyed_normal(padded_keys, n_importance_samples, network.latent_dim)
            batch_laplace = LaplaceProposal(*padded_search[1:]) if padded_search else None
            batch_searched = padded_search[0] if padded_search else None
            w, columns = log_weights(network, padded, noise, per_column, batch_laplace, batch_searched)
            w = w[: stop - start]
            log_sum = torch.logsumexp(w, dim=1)
            log_px[start:stop] = log_sum - math.log(n_importance_samples)
            ess[start:stop] = torch.exp(2.0 * log_sum - torch.logsumexp(2.0 * w, dim=1))
            if per_column:
                posterior = torch.softmax(w, dim=1).unsqueeze(-1)
                column_log_prob[start:stop] = (posterior * columns[: stop - start]).sum(1)
    return MarginalEstimate(
        to_numpy(log_px),
        to_numpy(ess),
        to_numpy(column_log_prob) if per_column else None,
        None if searched is None else searched.cpu().numpy(),
    )


def log_marginal_without_columns(network, X, columns, n_importance_samples, seed, activation_floats=None):
    """log p(x without column j): each row's likelihood with one of its columns left out.

    For explanations: log p(x) - log p(x_-j) = log p(x_j | x_-j) says how
    likely column j's value is given the rest of the row. The proposal of
    row i without column j is the encoder's q(z | x) with that column's
    input blanked (as a missing cell is), so that a wild value in column j
    does not drag the draws away from where the rest of the row puts z (the
    encoder's own q(z | x) follows the wild value, and then every column
    the dragged z mispredicts looks as unlikely as the wild one).

    Parameters
    ----------
    network : VAENetwork
    X : torch.Tensor of shape (n_rows, n_features)
    columns : array-like of int of shape (n_rows, n_left_out)
        For each row, the columns to leave out, one at a time.
    n_importance_samples, seed : see :func:`estimate_log_marginal`

    Returns
    -------
    ndarray of shape (n_rows, n_left_out)
    """
    columns = torch.as_tensor(np.asarray(columns, dtype=np.int64))
    n_rows, n_left_out = columns.shape
    if activation_floats is None:
        activation_floats = activation_floats_for(X.device)
    rows = rows_per_pass(n_importance_samples, network.widest_hidden_layer, activation_floats)
    repeated = X.repeat_interleave(n_left_out, dim=0)
    left_out = columns.reshape(-1, 1).to(X.device)
    out = torch.empty(n_rows * n_left_out, dtype=torch.float32, device=X.device)
    with torch.inference_mode():
        # the row's own draws for every left-out column (common random numbers)
        keys = row_keys(X, seed).repeat_interleave(n_left_out, dim=0)
        for start, stop, batch, batch_keys, batch_columns in fixed_shape_passes(repeated, rows, keys, left_out):
            blanked = batch.scatter(1, batch_columns, float("nan"))
            mean, log_var = network.encode(blanked)
            noise = keyed_normal(batch_keys, n_importance_samples, network.latent_dim)
            z = reparameterize(mean, log_var, noise)
            log_q = network.log_prior(noise) - 0.5 * log_var.sum(-1, keepdim=True)
            # scored on the blanked row: a column related to the left-out one sees no residual of it
            per_column = network.likelihood.column_log_prob(network.decode(z), blanked.unsqueeze(1))
            left_out_part = per_column.gather(-1, batch_columns.unsqueeze(1).expand(-1, per_column.shape[1], 1))
            w = per_column.sum(-1) - left_out_part.squeeze(-1) + network.log_prior(z) - log_q
            out[start:stop] = (torch.logsumexp(w, dim=1) - math.log(n_importance_samples))[: stop - start]
    return to_numpy(out).reshape(n_rows, n_left_out)


def check_finite_scores(log_px):
    """Raise a ValueError naming the first rows whose score is not finite."""
    bad = np.flatnonzero(~np.isfinite(log_px))
    if bad.size:
        shown = ", ".join(f"row {i} ({log_px[i]})" for i in bad[:5])
        raise ValueError(
            f"log p(x) is not finite for {bad.size} row(s): {shown}. The model's "
            "likelihood overflowed on these rows; check them for extreme values far "
            "outside the training range."
        )
