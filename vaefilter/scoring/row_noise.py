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


# fmix32's multipliers as int32 (the same 32 bits): int32 products wrap modulo 2**32
_M1_INT32 = 0x85EBCA6B - 2**32
_M2_INT32 = 0xC2B2AE35 - 2**32


def _mix32_int32(h, carry=None):
    """:func:`_mix32` on int32 tensors holding the same 32 bits, half the memory traffic.

    The draws' hashing was 16% of a sequential decision's time on titanic (60,000
    rows); in int32 it takes half as long. Right shifts of int32 copy the sign
    bit, so each is masked to a logical shift. ``carry`` (bool, same shape)
    marks words whose int64 value reached 2**32 (a sum that overflowed 32
    bits): int64 fmix32 shifts that 33rd bit into bit 16 at its first step,
    and it must here too for the same bits.
    """
    shifted = (h >> 16) & 0xFFFF
    if carry is not None:
        shifted = shifted | (carry.to(torch.int32) << 16)
    h = h ^ shifted
    h = h * _M1_INT32
    h = h ^ ((h >> 13) & 0x7FFFF)
    h = h * _M2_INT32
    return h ^ ((h >> 16) & 0xFFFF)


def _as_int32(words):
    """int64 tensors holding unsigned 32-bit values as int32 with the same bits."""
    return torch.where(words > 0x7FFFFFFF, words - 2**32, words).to(torch.int32)


def row_keys(x, seed):
    """A 32-bit key per row of the float32 matrix ``x``, mixing every column's bits."""
    # + 0.0: a row with -0.0 is the row with 0.0 (same value, other bits), and gets its draws
    bits = (x + 0.0).contiguous().view(torch.int32).to(torch.int64) & _MASK32
    key = torch.full((x.shape[0],), int(seed) & _MASK32, dtype=torch.int64, device=x.device)
    for j in range(x.shape[1]):
        key = _mix32((key ^ bits[:, j]) + ((j + 1) * _GOLDEN & _MASK32))
    return key


def _uniform(keys, counters):
    """Uniforms in (0, 1) with 24 random bits, shape (n_rows, n_counters); counters below 2**31
    (K x latent_dim values a row: far below it)."""
    # fmix32(fmix32(key ^ counter * golden) + counter): in int32, the sum's
    # overflow past 32 bits is the carry int64 kept (counters are below 2**31)
    mixed = (counters * _GOLDEN & _MASK32).unsqueeze(0)
    first = _mix32_int32(_as_int32(keys).unsqueeze(1) ^ _as_int32(mixed))
    step = _as_int32(counters).unsqueeze(0)
    total = first + step
    carry = (total >= 0) & (total < step)
    h = _mix32_int32(total, carry)
    return (((h >> 8) & 0xFFFFFF).to(torch.float32) + 0.5) * (1.0 / 2**24)


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
    # one gather from [cosines | sines] (a sine of pair p sits at p + len(pairs))
    both = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    index = torch.where(is_cosine, position, position + pairs.numel())
    return both.index_select(1, index).reshape(keys.shape[0], draws.numel(), latent_dim)
