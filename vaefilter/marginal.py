"""Importance-sampled log p(x) with the encoder q(z|x) as proposal.

For each row, with z_k = mu(x) + sigma(x) * eps_k,

    w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x)
    log p(x) ~= logsumexp_k(w_k) - log K

The estimate of p(x) is unbiased; that of log p(x) is a stochastic lower bound
whose gap shrinks as K grows (K = 1 is the ELBO).

The K standard-normal draws ``eps`` of a row are derived from the row's own
bytes and a seed (see :mod:`vaefilter.row_noise`): a row's score is then a
deterministic function of that row alone, independent of which rows are
scored with it or in what order, while different rows get independent draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .posterior_search import mixture_draws, search_modes
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
    """

    log_px: np.ndarray
    effective_sample_size: np.ndarray
    column_log_prob: np.ndarray | None = None


def log_weights(network, x, noise, per_column=False, found=None):
    """Importance log-weights of shape (n_rows, K) for a batch of rows.

    ``noise`` holds standard-normal draws of shape (n_rows, K, latent_dim).
    With ``per_column``, also log p(x_j | z_k) of shape (n_rows, K, n_features).
    With ``found`` (one latent point per row, see :func:`search_in_passes`),
    the second half of the draws comes from q(z|x) moved there.
    """
    mean, log_var = network.encode(x)
    if found is not None and noise.shape[1] > 1:
        z, log_q = mixture_draws(network, mean, log_var, found, noise)
    else:
        z = mean.unsqueeze(1) + (0.5 * log_var).exp().unsqueeze(1) * noise
        # (z - mean) / std is exactly the noise, so q's density needs no division
        log_q = network.log_prior(noise) - 0.5 * log_var.sum(-1, keepdim=True)
    params = network.decode(z)
    if per_column:
        columns = network.likelihood.column_log_prob(params, x.unsqueeze(1))
        log_px_given_z = columns.sum(-1)
    else:
        columns, log_px_given_z = None, network.likelihood.log_prob(params, x.unsqueeze(1))
    return log_px_given_z + network.log_prior(z) - log_q, columns


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


def search_in_passes(network, X, n_steps):
    """Each row's posterior mode as found by :func:`vaefilter.posterior_search.search_modes`.

    Searched in passes of MAX_ROWS_PER_PASS rows, not in the scoring passes
    (a few hundred rows at K=100), where each Adam step's fixed cost would
    dominate.
    """
    found = torch.empty(X.shape[0], network.latent_dim, device=X.device)
    for start, stop, batch in fixed_shape_passes(X, MAX_ROWS_PER_PASS):
        with torch.no_grad():
            mean, _ = network.encode(batch)
        found[start:stop] = search_modes(network, batch, mean, n_steps)[: stop - start]
    return found


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


def rows_per_pass(n_importance_samples, hidden_width, activation_floats=CPU_ACTIVATION_FLOATS_PER_THREAD):
    """Rows per encoder/decoder pass: a function of the model, K and the device, never of the input."""
    draws = activation_floats // max(int(hidden_width), 1)
    return int(np.clip(draws // n_importance_samples, MIN_ROWS_PER_PASS, MAX_ROWS_PER_PASS))


def estimate_log_marginal(
    network, X, n_importance_samples, seed, activation_floats=None, per_column=False, search_steps=0
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
        Seed of the per-row draws (see :func:`vaefilter.row_noise.row_normal`).
    activation_floats : int, optional
        Upper bound on rows x K x width of the widest hidden decoder
        activation in one pass; by default sized for the device of ``X``.
    per_column : bool
        Also compute the posterior expectation of each column's log p(x_j | z).
    search_steps : int
        Adam steps towards each row's posterior mode for a second proposal
        (see :mod:`vaefilter.posterior_search`); 0 samples from q(z|x) alone.

    Returns
    -------
    MarginalEstimate
    """
    if activation_floats is None:
        activation_floats = activation_floats_for(X.device)
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
        found = search_in_passes(network, X, search_steps) if search_steps and n_importance_samples > 1 else None
        aligned = (keys,) if found is None else (keys, found)
        for start, stop, padded, padded_keys, *padded_found in fixed_shape_passes(X, rows, *aligned):
            noise = keyed_normal(padded_keys, n_importance_samples, network.latent_dim)
            w, columns = log_weights(network, padded, noise, per_column, *padded_found)
            w = w[: stop - start]
            log_sum = torch.logsumexp(w, dim=1)
            log_px[start:stop] = log_sum - math.log(n_importance_samples)
            ess[start:stop] = torch.exp(2.0 * log_sum - torch.logsumexp(2.0 * w, dim=1))
            if per_column:
                posterior = torch.softmax(w, dim=1).unsqueeze(-1)
                column_log_prob[start:stop] = (posterior * columns[: stop - start]).sum(1)
    return MarginalEstimate(
        _to_numpy(log_px),
        _to_numpy(ess),
        _to_numpy(column_log_prob) if per_column else None,
    )


def _to_numpy(tensor):
    return tensor.double().cpu().numpy()


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
