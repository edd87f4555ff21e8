"""Standard-normal draws that are a deterministic function of (row, seed).

Importance sampling needs K draws per row. Sharing one set of K draws across
rows makes a row's score independent of its batch, but then every row's
estimate errs in the same direction and the mean score keeps that luck.
Deriving the draws from a hash of the row's own bytes gives both: scores
that depend on the row alone, and independent errors across rows (identical
rows get identical draws). The hash is a counter-based generator built from
the murmur3 finaliser on 32-bit words, followed by Box-Muller.
"""

from __future__ import annotations

import math

import torch

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def _mix32(h):
    """murmur3's fmix32 on int64 tensors holding unsigned 32-bit values."""
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _MASK32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _MASK32
    return h ^ (h >> 16)


def row_keys(x, seed):
    """A 32-bit key per row of the float32 matrix ``x``, mixing every column's bits."""
    # + 0.0: a row with -0.0 is the row with 0.0 (same value, other bits), and gets its draws
    bits = (x + 0.0).contiguous().view(torch.int32).to(torch.int64) & _MASK32
    key = torch.full((x.shape[0],), int(seed) & _MASK32, dtype=torch.int64, device=x.device)
    for j in range(x.shape[1]):
        key = _mix32((key ^ bits[:, j]) + ((j + 1) * _GOLDEN & _MASK32))
    return key


def _uniform(keys, counters):
    """Uniforms in (0, 1) with 24 random bits, shape (n_rows, n_counters)."""
    h = _mix32(_mix32(keys.unsqueeze(1) ^ (counters * _GOLDEN & _MASK32).unsqueeze(0)) + counters.unsqueeze(0))
    return ((h >> 8).to(torch.float32) + 0.5) * (1.0 / 2**24)


def row_normal(x, n_draws, latent_dim, seed):
    """Standard-normal draws of shape (n_rows, n_draws, latent_dim) keyed by each row of ``x``."""
    return keyed_normal(row_keys(x, seed), n_draws, latent_dim)


def keyed_normal(keys, n_draws, latent_dim):
    """Standard-normal draws of shape (n_keys, n_draws, latent_dim), a function of each key alone."""
    n_values = n_draws * latent_dim
    n_pairs = (n_values + 1) // 2
    counters = torch.arange(2 * n_pairs, dtype=torch.int64, device=keys.device)
    u = _uniform(keys, counters)
    radius = torch.sqrt(-2.0 * torch.log(u[:, :n_pairs]))
    angle = (2.0 * math.pi) * u[:, n_pairs:]
    normal = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)[:, :n_values]
    return normal.reshape(keys.shape[0], n_draws, latent_dim)


def keyed_normal_at(keys, draws, n_draws, latent_dim):
    """``keyed_normal(keys, n_draws, latent_dim)[:, draws]`` without computing the other draws.

    Sequential decisions (:mod:`vaefilter.scoring.sequential`) score a row's K draws
    in rounds; each round must use exactly the draws a full-K run uses, so
    that a row that goes the distance gets the full-K estimate. The draws are
    indexed within the full K: value ``v = k * latent_dim + l`` is the cosine
    of Box-Muller pair ``v`` when ``v`` is below the number of pairs, else the
    sine of pair ``v - n_pairs``.
    """
    n_pairs = (n_draws * latent_dim + 1) // 2
    draws = torch.as_tensor(draws, dtype=torch.int64, device=keys.device)
    values = (draws.unsqueeze(1) * latent_dim + torch.arange(latent_dim, device=keys.device)).reshape(-1)
    is_cosine = values < n_pairs
    pair = torch.where(is_cosine, values, values - n_pairs)
    # Each Box-Muller pair is hashed once: a round of sequential decisions takes
    # draw k and draw k + K/2 together, whose values are the cosine and the sine
    # of the same pairs (half the hashing of computing every value on its own;
    # noise was 9% of a draw's cost on titanic)
    pairs, position = torch.unique(pair, sorted=True, return_inverse=True)
    u = _uniform(keys, torch.cat([pairs, n_pairs + pairs]))
    radius = torch.sqrt(-2.0 * torch.log(u[:, : pairs.numel()]))
    angle = (2.0 * math.pi) * u[:, pairs.numel():]
    if bool(is_cosine.all()):
        normal = (radius * torch.cos(angle))[:, position]
    elif not bool(is_cosine.any()):
        normal = (radius * torch.sin(angle))[:, position]
    else:
        normal = torch.where(is_cosine, (radius * torch.cos(angle))[:, position], (radius * torch.sin(angle))[:, position])
    return normal.reshape(keys.shape[0], draws.numel(), latent_dim)
