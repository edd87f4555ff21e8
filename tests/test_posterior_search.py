"""A second proposal per row, centred at the row's posterior mode."""

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from vaefilter import VAEOutlierDetector
from vaefilter.marginal import estimate_log_marginal
from vaefilter.posterior_search import search_modes
from test_marginal import exact_proposal_case, ppca_network


@pytest.fixture(scope="module")
def misplaced_encoder():
    """Linear-Gaussian model whose encoder mean is 1.5 posterior units off: the search must fix it."""
    rng = np.random.RandomState(3)
    n_features, noise_variance = 6, 0.3
    Q, _ = np.linalg.qr(rng.normal(size=(n_features, 2)))
    W, b = Q * np.array([2.0, 1.0]), rng.normal(size=n_features)
    X = rng.normal(size=(300, 2)) @ W.T + b + rng.normal(scale=np.sqrt(noise_variance), size=(300, n_features))
    exact = multivariate_normal(b, W @ W.T + noise_variance * np.eye(n_features)).logpdf(X)
    network = ppca_network(W, b, noise_variance, proposal_inflation=1.0, proposal_shift=1.5)
    posterior_mean = X @ (np.linalg.inv(W.T @ W / noise_variance + np.eye(2)) @ W.T / noise_variance).T
    posterior_mean -= (np.linalg.inv(W.T @ W / noise_variance + np.eye(2)) @ W.T / noise_variance @ b)
    return network, torch.tensor(X, dtype=torch.float32), exact, posterior_mean


def _log_px(network, X, K, search_steps, seed=0):
    return estimate_log_marginal(network, X, K, seed, search_steps=search_steps)


def test_the_search_finds_the_posterior_mode(misplaced_encoder):
    network, X, _, posterior_mean = misplaced_encoder
    with torch.no_grad():
        start, _ = network.encode(X)
    assert np.abs(start.numpy() - posterior_mean).max() > 1.0
    found = search_modes(network, X, start, 40)
    np.testing.assert_allclose(found.numpy(), posterior_mean, atol=0.05)


def test_the_search_repairs_a_misplaced_proposal(misplaced_encoder):
    network, X, exact, _ = misplaced_encoder
    plain = _log_px(network, X, 100, 0).log_px
    searched = _log_px(network, X, 100, 25).log_px
    # measured: mean abs error 0.45 without the search, about 0.01 with it
    assert np.abs(plain - exact).mean() > 0.2
    assert np.abs(searched - exact).mean() < 0.05
    assert abs(searched.mean() - exact.mean()) < 0.02


def test_mixture_weights_keep_a_good_proposal_exact():
    # encoder = exact posterior: every component is exact and so is the mixture
    network, X, exact = exact_proposal_case()
    estimate = _log_px(network, torch.tensor(X, dtype=torch.float32), 8, 25)
    np.testing.assert_allclose(estimate.log_px, exact, atol=0.02)


def test_searched_scores_do_not_depend_on_the_batch(misplaced_encoder):
    network, X, _, _ = misplaced_encoder
    together = _log_px(network, X[:20], 16, 10).log_px
    alone = np.array([_log_px(network, X[i : i + 1], 16, 10).log_px[0] for i in range(20)])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)


def test_the_search_leaves_the_network_alone(misplaced_encoder):
    network, X, _, _ = misplaced_encoder
    before = [p.detach().clone() for p in network.parameters()]
    _log_px(network, X[:10], 16, 5)
    for p, b in zip(network.parameters(), before):
        assert p.grad is None
        assert torch.equal(p, b)


def test_estimator_parameter_reaches_the_sampler():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 3)) @ rng.normal(size=(3, 5))
    det = VAEOutlierDetector(latent_dim=2, hidden_layer_sizes=(16,), max_epochs=20, proposal_steps=0,
                             n_importance_samples=16, random_state=0).fit(X)
    plain = det.score_samples(X[:30])
    searched = det.set_params(posterior_search_steps=10).score_samples(X[:30])
    assert np.all(np.isfinite(searched)) and not np.allclose(plain, searched)
    # the search only changes the proposal: both estimate the same log p(x)
    assert abs(plain.mean() - searched.mean()) < 0.5
    # explanations weigh the same draws: their log p(x) is the score
    np.testing.assert_allclose(det.explain(X[:30])["log_px"].to_numpy(), searched, rtol=1e-5)
    with pytest.raises(ValueError, match="posterior_search_steps"):
        VAEOutlierDetector(posterior_search_steps=-1).fit(X)
