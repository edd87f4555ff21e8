"""Per-row draws: standard normal, independent across rows, fixed by (row, seed)."""

import numpy as np
import pytest
import torch
from scipy import stats

from vaefilter.scoring.row_noise import row_keys, row_normal


def test_draws_are_standard_normal_and_uncorrelated():
    x = torch.tensor(np.random.RandomState(0).normal(size=(2000, 3)), dtype=torch.float32)
    draws = row_normal(x, 50, 4, seed=7).reshape(-1, 4).numpy()
    assert stats.kstest(draws[:, 0], "norm").pvalue > 1e-3
    assert abs(draws.mean()) < 0.01 and abs(draws.var() - 1) < 0.01
    assert np.abs(np.corrcoef(draws.T) - np.eye(4)).max() < 0.01


def test_draws_depend_on_the_row_and_the_seed_only():
    x = torch.tensor(np.random.RandomState(1).normal(size=(50, 5)), dtype=torch.float32)
    together = row_normal(x, 8, 3, seed=1)
    alone = torch.cat([row_normal(x[i : i + 1], 8, 3, seed=1) for i in range(50)])
    assert torch.equal(together, alone)
    assert not torch.equal(together, row_normal(x, 8, 3, seed=2))
    duplicated = torch.cat([x[:1], x[:1]])
    pair = row_normal(duplicated, 8, 3, seed=1)
    assert torch.equal(pair[0], pair[1])


def test_different_rows_get_independent_draws():
    # rows that differ in one last bit still get unrelated draws
    x = torch.zeros(1000, 2)
    x[:, 1] = torch.arange(1000, dtype=torch.float32) * 1e-30
    assert len(set(row_keys(x, 0).tolist())) == 1000
    first = row_normal(x, 1, 1, seed=0)[:, 0, 0].numpy()
    assert abs(np.corrcoef(first[:-1], first[1:])[0, 1]) < 0.1


@pytest.mark.parametrize("n_draws, latent_dim", [(40, 3), (7, 3), (9, 5), (100, 8)])
def test_draws_picked_from_the_full_k_are_the_full_k_draws(n_draws, latent_dim):
    """keyed_normal_at hashes each Box-Muller pair once, whether a pick holds its cosine, its sine or both."""
    from vaefilter.scoring.row_noise import keyed_normal, keyed_normal_at

    keys = torch.randint(0, 2**32, (11,), dtype=torch.int64, generator=torch.Generator().manual_seed(0))
    full = keyed_normal(keys, n_draws, latent_dim)
    half = n_draws // 2
    picks = [torch.arange(n_draws), torch.arange(half), half + torch.arange(n_draws - half),
             torch.tensor([n_draws - 1, 0, half]), torch.tensor([1, half + 1, 1])]
    for draws in picks:
        assert torch.equal(keyed_normal_at(keys, draws, n_draws, latent_dim), full[:, draws]), draws


def _fmix32_reference(h):
    """murmur3's fmix32 on Python ints, as the int64 generator computed it (a 33-bit input keeps its top bit)."""
    h ^= h >> 16
    h = h * 0x85EBCA6B & 0xFFFFFFFF
    h ^= h >> 13
    h = h * 0xC2B2AE35 & 0xFFFFFFFF
    return h ^ (h >> 16)


def _fmix32_inverse(h):
    h ^= h >> 16
    h = h * pow(0xC2B2AE35, -1, 2**32) & 0xFFFFFFFF
    h ^= (h >> 13) ^ (h >> 26)
    h = h * pow(0x85EBCA6B, -1, 2**32) & 0xFFFFFFFF
    return h ^ (h >> 16)


def test_int32_hashing_gives_the_bits_of_the_reference_generator():
    # The draws are hashed in int32 for speed; they must stay the bits of the
    # original generator (model files' bands were scored with them), including
    # keys whose first mix plus the counter passes 2**32 (a carry int32 drops)
    from vaefilter.scoring.row_noise import _GOLDEN, _uniform

    counters = [0, 1, 5, 37, 399, 799]
    carried = [_fmix32_inverse(m) ^ (c * _GOLDEN & 0xFFFFFFFF)
               for c in counters[1:] for m in (0xFFFFFFFF, 2**32 - c, 2**32 - c + 2)]
    keys = carried + [0, 1, 2**31 - 1, 2**31, 2**32 - 1] + np.random.RandomState(3).randint(0, 2**32, 40).tolist()
    got = _uniform(torch.tensor(keys, dtype=torch.int64), torch.tensor(counters, dtype=torch.int64)).numpy()
    expected = np.array([[((_fmix32_reference(_fmix32_reference(k ^ (c * _GOLDEN & 0xFFFFFFFF)) + c) >> 8) + 0.5)
                          / 2**24 for c in counters] for k in keys], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)
    assert sum(_fmix32_reference(k ^ (c * _GOLDEN & 0xFFFFFFFF)) + c >= 2**32 for k in keys for c in counters) >= 10
