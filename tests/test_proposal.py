"""Refitting the encoder as the importance sampler's proposal."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer

from vaefilter import VAEOutlierDetector


@pytest.fixture(scope="module")
def benign_split():
    X, y = load_breast_cancer(return_X_y=True)
    benign = X[y == 1]
    np.random.RandomState(0).shuffle(benign)
    return benign[:250], benign[250:]


@pytest.fixture(scope="module")
def fitted_pair(benign_split):
    train, _ = benign_split
    # without the posterior search, which would repair much of the ELBO encoder's gap; at the old
    # patience of 10, where this split's ELBO encoder leaves the refit 0.11 nats/row to close (at
    # patience 20 the refit closed 0.02 of 0.29 here, and the default is now 40: bench_likelihood's
    # K-gap table measures it at the defaults)
    # an encoder trained on the ELBO (training_samples=1), the one the refit was built for
    params = dict(random_state=0, max_epochs=100, n_iter_no_change=10, posterior_search_steps=0, training_samples=1)
    elbo_encoder = VAEOutlierDetector(proposal_steps=0, **params).fit(train)
    refitted = VAEOutlierDetector(proposal_steps=200, **params).fit(train)
    return elbo_encoder, refitted


def _gap_to_large_k(detector, X, K=100, K_ref=2000):
    detector = detector.set_params(n_importance_samples=K)
    small = detector.score_samples(X)
    large = detector.set_params(n_importance_samples=K_ref).score_samples(X)
    detector.set_params(n_importance_samples=K)
    return (small - large).mean()


def test_refit_leaves_the_model_unchanged(fitted_pair):
    elbo_encoder, refitted = fitted_pair
    # the same training run: the refit draws its seed after every other one
    for before, after in zip(elbo_encoder.network_.decoder.parameters(), refitted.network_.decoder.parameters()):
        torch.testing.assert_close(before, after, rtol=0, atol=0)
        assert after.requires_grad
    changed = [
        not torch.equal(a, b)
        for a, b in zip(elbo_encoder.network_.encoder.parameters(), refitted.network_.encoder.parameters())
    ]
    assert any(changed)


def test_refit_tightens_the_estimate_at_default_k(fitted_pair, benign_split):
    _, test = benign_split
    elbo_encoder, refitted = fitted_pair
    # measured with column relations: -0.33 nats/row with the ELBO encoder, -0.22
    # after the refit (and +0.003 at the defaults, whose posterior search closes
    # the rest); with the factorised decoder -0.196 and -0.06
    elbo_gap = _gap_to_large_k(elbo_encoder, test)
    refit_gap = _gap_to_large_k(refitted, test)
    assert refit_gap > -0.3
    assert elbo_gap < refit_gap - 0.05
    # both estimate the same density: at large K they draw together (measured
    # with the value-kind model, log-normal columns here: 0.36 nats/row apart
    # at K=100, 0.20 at K=2000; the ELBO encoder's proposal, too narrow for
    # these sharper posteriors, still lags at K=2000)
    apart_at_100 = abs(elbo_encoder.score_samples(test).mean() - refitted.score_samples(test).mean())
    elbo_encoder.set_params(n_importance_samples=2000)
    refitted.set_params(n_importance_samples=2000)
    apart_at_2000 = abs(elbo_encoder.score_samples(test).mean() - refitted.score_samples(test).mean())
    assert apart_at_2000 < 0.7 * apart_at_100
    elbo_encoder.set_params(n_importance_samples=100)
    refitted.set_params(n_importance_samples=100)


def test_refit_history(fitted_pair):
    elbo_encoder, refitted = fitted_pair
    assert elbo_encoder.proposal_curve_ == []
    steps, bounds = zip(*refitted.proposal_curve_)
    assert steps == tuple(range(0, 201, 25))
    assert np.all(np.isfinite(bounds))
    # step 0 is the ELBO encoder; every check uses the same held-out rows and draws
    assert max(bounds[1:]) > bounds[0]


def test_refit_is_reproducible(benign_split):
    train, test = benign_split
    params = dict(random_state=3, max_epochs=5, proposal_steps=60)
    first = VAEOutlierDetector(**params).fit(train).score_samples(test)
    second = VAEOutlierDetector(**params).fit(train).score_samples(test)
    np.testing.assert_array_equal(first, second)
