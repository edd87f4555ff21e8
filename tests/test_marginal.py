"""The importance sampler against a model whose marginal likelihood is known exactly."""

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from vaefilter.model.likelihoods import FactorizedLikelihood, GaussianColumns
from vaefilter.scoring.marginal import estimate_log_marginal, log_marginal_without_columns, rows_per_pass
from vaefilter.model.network import VAENetwork

DEFAULT_K = 100


def _softplus_inverse(y):
    return float(np.log(np.expm1(y)))


def ppca_network(W, b, noise_variance, proposal_inflation=1.3, proposal_shift=0.1):
    """A VAE whose decoder is exactly probabilistic PCA: x = W z + b + N(0, s^2 I).

    W has orthogonal columns, so the true posterior p(z|x) is a diagonal
    Gaussian; the encoder is set to that posterior with its standard deviation
    inflated and its mean shifted, so the proposal is good but not exact.
    """
    n_features, latent_dim = W.shape
    min_variance = 1e-6
    likelihood = FactorizedLikelihood(
        [GaussianColumns(range(n_features), np.zeros(n_features), np.ones(n_features), min_variance)], n_features
    )
    network = VAENetwork(likelihood, latent_dim, hidden_layer_sizes=())
    precision = W.T @ W / noise_variance + np.eye(latent_dim)
    posterior_cov = np.linalg.inv(precision)
    assert np.allclose(posterior_cov, np.diag(np.diag(posterior_cov)))
    A = posterior_cov @ W.T / noise_variance
    with torch.no_grad():
        enc, dec = network.encoder[0], network.decoder[0]
        enc.weight.zero_()
        enc.bias.zero_()
        enc.weight[:latent_dim] = torch.tensor(A, dtype=torch.float32)
        enc.bias[:latent_dim] = torch.tensor(-A @ b + proposal_shift, dtype=torch.float32)
        log_var = np.log(proposal_inflation**2 * np.diag(posterior_cov))
        enc.bias[latent_dim:] = torch.tensor(log_var, dtype=torch.float32)
        dec.weight.zero_()
        dec.bias.zero_()
        dec.weight[:n_features] = torch.tensor(W, dtype=torch.float32)
        dec.bias[:n_features] = torch.tensor(b, dtype=torch.float32)
        dec.bias[n_features:] = _softplus_inverse(noise_variance - min_variance)
    return network.eval()


@pytest.fixture(scope="module")
def ppca():
    rng = np.random.RandomState(0)
    n_features, latent_dim, noise_variance = 6, 2, 0.3
    Q, _ = np.linalg.qr(rng.normal(size=(n_features, latent_dim)))
    W = Q * np.array([2.0, 1.0])
    b = rng.normal(size=n_features)
    z = rng.normal(size=(400, latent_dim))
    X = z @ W.T + b + rng.normal(scale=np.sqrt(noise_variance), size=(400, n_features))
    exact = multivariate_normal(b, W @ W.T + noise_variance * np.eye(n_features)).logpdf(X)
    return ppca_network(W, b, noise_variance), X, exact


def _estimate(network, X, K, seed=0, **kwargs):
    return estimate_log_marginal(network, torch.tensor(X, dtype=torch.float32), K, seed, **kwargs)


def test_matches_exact_ppca_marginal_at_default_k(ppca):
    network, X, exact = ppca
    estimate = _estimate(network, X, DEFAULT_K).log_px
    assert np.abs(estimate - exact).mean() < 0.05
    assert np.abs(estimate - exact).max() < 0.25


def test_error_shrinks_as_k_grows(ppca):
    network, X, exact = ppca
    errors = [np.abs(_estimate(network, X, K).log_px - exact).mean() for K in (1, 10, 100, 1000)]
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[3] < 0.02  # ~ errors[2] / sqrt(10): Monte Carlo error falls as 1/sqrt(K)


def test_k1_is_a_lower_bound_on_average(ppca):
    network, X, exact = ppca
    elbo = _estimate(network, X, 1).log_px.mean()
    assert elbo < _estimate(network, X, DEFAULT_K).log_px.mean() <= exact.mean() + 0.005


def exact_proposal_case():
    """A linear-Gaussian model whose encoder is its exact posterior, with rows and their exact log p(x)."""
    rng = np.random.RandomState(1)
    Q, _ = np.linalg.qr(rng.normal(size=(4, 2)))
    W, b = Q * np.array([1.5, 0.7]), rng.normal(size=4)
    network = ppca_network(W, b, 0.5, proposal_inflation=1.0, proposal_shift=0.0)
    X = rng.normal(size=(50, 4))
    return network, X, multivariate_normal(b, W @ W.T + 0.5 * np.eye(4)).logpdf(X)


def test_exact_proposal_gives_exact_answer_with_one_sample():
    # with q = p(z|x) every importance weight equals p(x): K=1 is already exact
    network, X, exact = exact_proposal_case()
    estimate = _estimate(network, X, 1)
    np.testing.assert_allclose(estimate.log_px, exact, atol=2e-4)
    np.testing.assert_allclose(_estimate(network, X, 7).effective_sample_size, 7, rtol=1e-3)


def test_row_scores_do_not_depend_on_the_batch(ppca):
    network, X, _ = ppca
    # equal up to float32 rounding; other draws per row would move scores by ~0.01
    together = _estimate(network, X[:37], 16).log_px
    alone = np.array([_estimate(network, X[i : i + 1], 16).log_px[0] for i in range(37)])
    np.testing.assert_allclose(together, alone, rtol=1e-6, atol=1e-6)
    reversed_order = _estimate(network, X[:37][::-1].copy(), 16).log_px[::-1]
    np.testing.assert_allclose(together, reversed_order, rtol=1e-6, atol=1e-6)
    other_draws = _estimate(network, X[:37], 16, seed=1).log_px
    assert np.abs(together - other_draws).max() > 1e-3


def test_batching_over_rows_is_invisible(ppca):
    network, X, _ = ppca
    K, budget = 512, 2**14  # few rows per pass: 400 rows take many passes
    assert rows_per_pass(K, network.widest_hidden_layer, budget) < 50
    many_passes = _estimate(network, X, K, activation_floats=budget).log_px
    np.testing.assert_allclose(many_passes[13:29], _estimate(network, X[13:29], K).log_px, rtol=1e-6, atol=1e-6)


def test_scoring_passes_fit_the_cache_budget():
    # activations beyond the budget spill out of cache and halve CPU throughput
    assert rows_per_pass(100, 128, 2**20) * 100 * 128 <= 2**20
    assert rows_per_pass(100, 512, 2**20) < rows_per_pass(100, 128, 2**20)
    assert rows_per_pass(10**6, 128, 2**20) == 8  # at least 8 rows: BLAS kernels stay matrix-matrix


def test_per_column_contributions_sum_to_posterior_expected_log_likelihood(ppca):
    network, X, _ = ppca
    estimate = _estimate(network, X[:20], 64, per_column=True)
    assert estimate.column_log_prob.shape == (20, X.shape[1])
    # E_post[log p(x|z)] >= log p(x) - KL... at least it is finite and below the max per-column density
    assert np.isfinite(estimate.column_log_prob).all()


def test_empty_input_gives_empty_estimate(ppca):
    network, X, _ = ppca
    estimate = _estimate(network, X[:0], 8)
    assert estimate.log_px.shape == (0,)


def test_leaving_out_a_column_matches_the_exact_marginal_of_the_others(ppca):
    network, X, _ = ppca
    n_features = X.shape[1]
    rows = X[:60]
    columns = np.stack([np.arange(60) % n_features, (np.arange(60) + 3) % n_features], axis=1)
    got = log_marginal_without_columns(network, torch.tensor(rows, dtype=torch.float32),
                                       torch.as_tensor(columns), 500, seed=0)
    W = network.decoder[0].weight[:n_features].detach().double().numpy()
    b = network.decoder[0].bias[:n_features].detach().double().numpy()
    cov = W @ W.T + 0.3 * np.eye(n_features)
    exact = np.empty_like(got)
    for i, row in enumerate(rows):
        for c, j in enumerate(columns[i]):
            keep = np.delete(np.arange(n_features), j)
            exact[i, c] = multivariate_normal(b[keep], cov[np.ix_(keep, keep)]).logpdf(row[keep])
    assert np.abs(got - exact).mean() < 0.05
    assert np.abs(got - exact).max() < 0.5  # the blanked proposal is rougher than q(z | x)
