"""Importance-sampled log p(x) with the encoder q(z|x) as proposal.

For each row, with z_k = mu(x) + sigma(x) * eps_k,

    w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x)
    log p(x) ~= logsumexp_k(w_k) - log K

The estimate of p(x) is unbiased; that of log p(x) is a stochastic lower bound
whose gap shrinks as K grows (K = 1 is the ELBO).

The K standard-normal draws ``eps`` are shared by every row (common random
numbers): a row's score is then a deterministic function of that row alone,
independent of which rows are scored with it or in what order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# rows x importance samples per decoder pass: large enough for a few big
# matmuls per batch, small enough to keep the activations near 100 MB.
DEFAULT_MAX_BATCH_ELEMENTS = 2**17

# CPU matmul kernels take another code path (another summation order) for
# fewer than 8 rows; padding small batches keeps every row's score bit-identical
# whether it is scored alone or among others.
MIN_ROWS_PER_PASS = 8


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
    """

    log_px: np.ndarray
    effective_sample_size: np.ndarray


def importance_noise(n_importance_samples, latent_dim, seed, device="cpu"):
    """The K x latent_dim standard-normal draws shared by every row."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(n_importance_samples, latent_dim, generator=generator).to(device)


def log_weights(network, x, noise):
    """Importance log-weights of shape (n_rows, K) for a batch of rows."""
    mean, log_var = network.encode(x)
    std = (0.5 * log_var).exp()
    z = mean.unsqueeze(1) + std.unsqueeze(1) * noise.unsqueeze(0)
    params = network.decode(z)
    log_px_given_z = network.likelihood.log_prob(params, x.unsqueeze(1))
    # (z - mean) / std is exactly the noise, so q's density needs no division
    log_q = network.log_prior(noise).unsqueeze(0) - 0.5 * log_var.sum(-1, keepdim=True)
    return log_px_given_z + network.log_prior(z) - log_q


def _padded(x):
    missing = MIN_ROWS_PER_PASS - x.shape[0]
    if missing <= 0:
        return x
    return torch.cat([x, x[:1].expand(missing, -1)])


def _rows_per_batch(n_importance_samples, max_batch_elements):
    return max(MIN_ROWS_PER_PASS, max_batch_elements // n_importance_samples)


def estimate_log_marginal(network, X, noise, max_batch_elements=DEFAULT_MAX_BATCH_ELEMENTS):
    """Importance-sampled log p(x) for every row of ``X``.

    Parameters
    ----------
    network : VAENetwork
        The fitted model, in eval mode.
    X : torch.Tensor of shape (n_samples, n_features)
        Model matrix on the network's device.
    noise : torch.Tensor of shape (K, latent_dim)
        Shared standard-normal draws (see :func:`importance_noise`).
    max_batch_elements : int
        Upper bound on rows x K evaluated in one decoder pass.

    Returns
    -------
    MarginalEstimate
    """
    n_importance_samples = noise.shape[0]
    rows = _rows_per_batch(n_importance_samples, max_batch_elements)
    log_px, ess = [], []
    with torch.inference_mode():
        for start in range(0, X.shape[0], rows):
            batch = X[start : start + rows]
            w = log_weights(network, _padded(batch), noise)[: batch.shape[0]]
            log_sum = torch.logsumexp(w, dim=1)
            log_px.append(log_sum - math.log(n_importance_samples))
            ess.append(torch.exp(2.0 * log_sum - torch.logsumexp(2.0 * w, dim=1)))
    if not log_px:
        return MarginalEstimate(np.empty(0), np.empty(0))
    return MarginalEstimate(
        torch.cat(log_px).double().cpu().numpy(),
        torch.cat(ess).double().cpu().numpy(),
    )


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
