"""A second proposal per row: the Laplace approximation at the row's posterior mode."""

import copy

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from vaefilter import VAEOutlierDetector
from vaefilter.scoring import marginal
from vaefilter.scoring.marginal import encode_in_passes, estimate_log_marginal, search_in_passes
from vaefilter.datasets import load_titanic
from vaefilter.scoring import posterior_search
from vaefilter.scoring.posterior_search import (CONVERGED_GAIN, LaplaceProposal, _derivatives, _line_search,
                                                laplace_proposals, log_joint, misplacement)
from test_marginal import exact_proposal_case, ppca_network


def _linear_gaussian(shift):
    """A PPCA model whose encoder mean is ``shift`` units off, rows, exact log p(x) and exact posteriors."""
    rng = np.random.RandomState(3)
    n_features, noise_variance = 6, 0.3
    Q, _ = np.linalg.qr(rng.normal(size=(n_features, 2)))
    W, b = Q * np.array([2.0, 1.0]), rng.normal(size=n_features)
    X = rng.normal(size=(300, 2)) @ W.T + b + rng.normal(scale=np.sqrt(noise_variance), size=(300, n_features))
    exact = multivariate_normal(b, W @ W.T + noise_variance * np.eye(n_features)).logpdf(X)
    network = ppca_network(W, b, noise_variance, proposal_inflation=1.0, proposal_shift=shift)
    posterior_cov = np.linalg.inv(W.T @ W / noise_variance + np.eye(2))
    posterior_mean = (X - b) @ (posterior_cov @ W.T / noise_variance).T
    return network, torch.tensor(X, dtype=torch.float32), exact, posterior_mean, posterior_cov


@pytest.fixture(scope="module")
def misplaced_encoder():
    """The encoder's mean is 1.5 units (4-7 posterior standard deviations) off: the search must fix it."""
    return _linear_gaussian(shift=1.5)


def _log_px(network, X, K, search_steps, seed=0):
    return estimate_log_marginal(network, X, K, seed, search_steps=search_steps)


def test_newton_finds_the_exact_posterior_and_its_covariance(misplaced_encoder):
    network, X, _, posterior_mean, posterior_cov = misplaced_encoder
    with torch.no_grad():
        start, _ = network.encode(X)
    assert np.abs(start.numpy() - posterior_mean).max() > 1.0
    found = laplace_proposals(network, X, start, 5)
    np.testing.assert_allclose(found.mode.numpy(), posterior_mean, atol=1e-3)
    covariance = found.axes @ torch.diag_embed(1.0 / found.curvature) @ found.axes.transpose(-1, -2)
    np.testing.assert_allclose(covariance.numpy(), np.broadcast_to(posterior_cov, covariance.shape), atol=1e-4)


def test_newton_walks_a_long_way_to_a_far_mode(misplaced_encoder):
    # 12 units is past MAX_STEP: the steps are capped, and still arrive
    network, X, _, posterior_mean, _ = misplaced_encoder
    start = torch.tensor(posterior_mean, dtype=torch.float32) + 12.0
    found = laplace_proposals(network, X[:50], start[:50], 10)
    np.testing.assert_allclose(found.mode.numpy(), posterior_mean[:50], atol=1e-3)
    assert laplace_proposals(network, X[:50], start[:50], 1).mode.sub(start[:50]).norm(dim=1).max() <= 5.0 + 1e-4


def _counting_derivatives(monkeypatch):
    """Rows passed to posterior_search._derivatives, call by call."""
    rows, derivatives = [], posterior_search._derivatives

    def counted(network, x, z):
        rows.append(x.shape[0])
        return derivatives(network, x, z)

    monkeypatch.setattr(posterior_search, "_derivatives", counted)
    return rows


def test_a_row_whose_newton_step_gains_little_stops_after_it(misplaced_encoder, monkeypatch):
    # 0.05 units from the mode a full Newton step gains far less than
    # CONVERGED_GAIN: the row takes it and keeps the curvature it has
    # (exact here: the log-joint is quadratic), with one evaluation of the
    # derivatives instead of two
    network, X, _, posterior_mean, posterior_cov = misplaced_encoder
    start = torch.tensor(posterior_mean, dtype=torch.float32) + 0.05
    rows = _counting_derivatives(monkeypatch)
    found = laplace_proposals(network, X, start, 10)
    assert rows == [len(X)]
    np.testing.assert_allclose(found.mode.numpy(), posterior_mean, atol=1e-4)
    covariance = found.axes @ torch.diag_embed(1.0 / found.curvature) @ found.axes.transpose(-1, -2)
    np.testing.assert_allclose(covariance.numpy(), np.broadcast_to(posterior_cov, covariance.shape), atol=1e-4)


def test_the_first_step_along_q_reaches_the_mode(misplaced_encoder, monkeypatch):
    # started at the encoder's mean with its variance, the first step is
    # q's preconditioned gradient (no Hessian there), cut to the parabola's
    # peak; the Newton step from there gains little, so the derivatives are
    # evaluated once per row, where Newton from the start needed them twice
    network, X, _, posterior_mean, posterior_cov = misplaced_encoder
    with torch.no_grad():
        mean, log_var = network.encode(X)
    rows = _counting_derivatives(monkeypatch)
    found = laplace_proposals(network, X, mean, 10, start_variance=log_var.exp())
    assert rows == [len(X)]
    np.testing.assert_allclose(found.mode.numpy(), posterior_mean, atol=1e-3)
    covariance = found.axes @ torch.diag_embed(1.0 / found.curvature) @ found.axes.transpose(-1, -2)
    np.testing.assert_allclose(covariance.numpy(), np.broadcast_to(posterior_cov, covariance.shape), atol=1e-4)


def test_an_overshooting_step_is_cut_to_the_parabolas_peak(misplaced_encoder):
    # on a quadratic log-joint a step 3x too long loses log p(x, z); the
    # parabola through the start (value, slope) and that step's value has its
    # peak at exactly a third of it, which no fixed fraction (1, .5, .2, .05) hits
    network, X, _, posterior_mean, _ = misplaced_encoder
    network, X = copy.deepcopy(network).double(), X[:20].double()
    z = torch.tensor(posterior_mean[:20]) + torch.tensor([0.3, -0.2], dtype=torch.float64)
    value, gradient, negative_hessian = _derivatives(network, X, z)
    newton = torch.linalg.solve(negative_hessian, gradient.unsqueeze(-1)).squeeze(-1)
    gain, fraction = _line_search(network, X, z, value, gradient, 3 * newton, torch.arange(20), 8)
    np.testing.assert_allclose(fraction.numpy(), 1 / 3, rtol=1e-6)
    exact_gain = 0.5 * (gradient * newton).sum(-1)
    np.testing.assert_allclose(gain.numpy(), exact_gain.numpy(), rtol=1e-6)


def test_the_cheaper_search_keeps_a_trained_models_estimate(nonlinear_model):
    # the far rows are searched (40%); K=100 stays within 0.05 nats of K=5000
    # on average (measured 0.012), where q alone is 3.8 nats short
    network, X_test = nonlinear_model
    searched = estimate_log_marginal(network, X_test, 100, 0, search_steps=10)
    plain = estimate_log_marginal(network, X_test, 100, 0, search_steps=0).log_px
    reference = estimate_log_marginal(network, X_test, 5000, 1, search_steps=10).log_px
    assert (plain - reference).mean() < -1.0
    assert abs((searched.log_px - reference).mean()) < 0.05


def test_laplace_sampling_matches_its_density():
    rng = np.random.RandomState(0)
    A = rng.normal(size=(3, 3))
    covariance = A @ A.T + 0.1 * np.eye(3)
    curvature, axes = np.linalg.eigh(np.linalg.inv(covariance))
    mode = rng.normal(size=3)
    proposal = LaplaceProposal(*(torch.tensor(a[None], dtype=torch.float64) for a in (mode, curvature, axes)))
    z = proposal.sample(torch.randn(1, 20000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    np.testing.assert_allclose(np.cov(z[0].numpy().T), covariance, atol=0.05 * np.abs(covariance).max())
    exact = multivariate_normal(mode, covariance).logpdf(z[0, :50].numpy())
    np.testing.assert_allclose(proposal.log_density(z[:, :50])[0].numpy(), exact, rtol=1e-10)


def test_the_search_repairs_a_misplaced_proposal(misplaced_encoder):
    network, X, exact, _, _ = misplaced_encoder
    plain = _log_px(network, X, 100, 0).log_px
    estimate = _log_px(network, X, 100, 10)
    # measured: mean abs error 0.45 without the search, about 0.002 with it
    assert estimate.searched.mean() > 0.9
    assert np.abs(plain - exact).mean() > 0.2
    assert np.abs(estimate.log_px - exact).mean() < 0.01
    assert abs(estimate.log_px.mean() - exact.mean()) < 0.005


def test_a_good_proposal_is_not_searched():
    # encoder = exact posterior: the pilot's weights are all equal, no row is searched
    network, X, exact = exact_proposal_case()
    X = torch.tensor(X, dtype=torch.float32)
    estimate = _log_px(network, X, 8, 10)
    assert not estimate.searched.any()
    np.testing.assert_allclose(estimate.log_px, exact, atol=2e-4)
    np.testing.assert_allclose(estimate.log_px, _log_px(network, X, 8, 0).log_px, rtol=1e-6)


def test_the_search_finds_a_mode_the_encoder_misses():
    # a trained nonlinear model whose encoder is then pushed 4 units away
    rng = np.random.RandomState(0)
    Z = rng.normal(size=(600, 2))
    X = np.tanh(Z @ rng.normal(size=(2, 6))) + 0.05 * rng.normal(size=(600, 6))
    det = VAEOutlierDetector(latent_dim=2, hidden_layer_sizes=(32,), max_epochs=60, proposal_steps=0,
                             random_state=0).fit(X[:500])
    reference = det.set_params(n_importance_samples=5000, posterior_search_steps=0).score_samples(X[500:])
    with torch.no_grad():
        det.network_.encoder[-1].bias[:2] += 4.0
    broken = det.set_params(n_importance_samples=100).score_samples(X[500:])
    repaired = det.set_params(posterior_search_steps=10).score_samples(X[500:])
    assert (reference - broken).mean() > 10.0
    assert abs((reference - repaired).mean()) < 0.1


@pytest.fixture(scope="module")
def nonlinear_model():
    """A small trained model on the CPU and 40 rows, of which the far half are searched."""
    rng = np.random.RandomState(1)
    X = np.tanh(rng.normal(size=(300, 3)) @ rng.normal(size=(3, 8))) + 0.05 * rng.normal(size=(300, 8))
    # on the CPU (see marginal._in_search_precision); GPU passes have one fixed shape
    det = VAEOutlierDetector(latent_dim=3, hidden_layer_sizes=(32, 32), max_epochs=30, proposal_steps=0,
                             n_importance_samples=16, random_state=0, device="cpu").fit(X)
    X_test = np.vstack([X[:20], X[:20] * 3 + rng.normal(size=(20, 8))]).astype(np.float32)
    return det.network_, torch.tensor(X_test)


def test_searched_scores_do_not_depend_on_the_batch(nonlinear_model):
    # bit for bit: the CLI prints scores to 6 decimals, and a filter's output
    # must not change with its chunk size. Rows stop moving at different
    # steps, so each step sees other row counts; in float32 that changed modes
    # by 1e-5 (see marginal._in_search_precision).
    network, X_test = nonlinear_model
    together = estimate_log_marginal(network, X_test, 16, 0, search_steps=10)
    assert 5 < together.searched.sum() < len(X_test)
    for rows in (slice(0, 9), slice(9, 25), slice(25, 40)):
        part = estimate_log_marginal(network, X_test[rows], 16, 0, search_steps=10).log_px
        np.testing.assert_array_equal(part, together.log_px[rows])
    alone = [estimate_log_marginal(network, X_test[i : i + 1], 16, 0, search_steps=10).log_px[0]
             for i in range(len(X_test))]
    np.testing.assert_array_equal(alone, together.log_px)


def test_scores_do_not_depend_on_the_eigensolvers_signs(nonlinear_model, monkeypatch):
    # LAPACK and cuSOLVER choose eigenvector signs differently: a row's Laplace
    # draws, and so its score, must not follow that choice
    network, X_test = nonlinear_model
    before = estimate_log_marginal(network, X_test, 16, 0, search_steps=10)
    eigh = torch.linalg.eigh

    def flipped(matrix):
        values, vectors = eigh(matrix)
        return values, -vectors

    monkeypatch.setattr(torch.linalg, "eigh", flipped)
    after = estimate_log_marginal(network, X_test, 16, 0, search_steps=10)
    assert before.searched.sum() > 5
    np.testing.assert_array_equal(after.log_px, before.log_px)


def test_rows_at_the_threshold_are_decided_in_float64(nonlinear_model, monkeypatch):
    # which rows are searched is tested in float32, whose rounding depends on
    # the batch; a threshold 1e-10 either side of a row's exact value is far
    # inside that rounding, so only the float64 retest decides both correctly
    network, X_test = nonlinear_model
    mean, log_var = encode_in_passes(network, X_test)
    exact = misplacement(copy.deepcopy(network).double(), X_test.double(), mean.double(), log_var.double())
    for row in range(0, len(X_test), 4):
        for offset, searched in ((-1e-10, True), (1e-10, False)):
            monkeypatch.setattr(marginal, "SEARCH_THRESHOLD", float(exact[row]) * (1 + offset))
            assert search_in_passes(network, X_test, 10, 2**16)[1][row].item() is searched


def _autograd_derivatives(network, x, z):
    """log p(x, z), gradient and negative Hessian by double backward through everything."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        value = log_joint(network, x, z)
        (gradient,) = torch.autograd.grad(value.sum(), [z], create_graph=True)
        hessian = torch.stack([torch.autograd.grad(gradient[:, j].sum(), [z], retain_graph=True)[0]
                               for j in range(z.shape[1])], dim=1)
    return value.detach(), gradient.detach(), -hessian.detach()


def test_the_closed_form_derivatives_match_autograd():
    # Titanic: Gaussian, Bernoulli and categorical columns, and missing cells
    frame = load_titanic()
    det = VAEOutlierDetector(latent_dim=3, hidden_layer_sizes=(16, 12), max_epochs=5, proposal_steps=0,
                             handle_missing="model", random_state=0, device="cpu").fit(frame)
    network = copy.deepcopy(det.network_).double()
    X = torch.tensor(det._validate_for_scoring(frame.head(200)), dtype=torch.float64)
    assert torch.isnan(X).any()
    with torch.no_grad():
        z = network.encode(X)[0] + torch.randn(200, 3, generator=torch.Generator().manual_seed(0), dtype=X.dtype)
        ours = _derivatives(network, X, z)
    for found, expected in zip(ours, _autograd_derivatives(network, X, z)):
        np.testing.assert_allclose(found.numpy(), expected.numpy(), rtol=1e-9, atol=1e-9 * expected.abs().max().item())


def test_the_search_leaves_the_network_alone(misplaced_encoder):
    network, X, _, _, _ = misplaced_encoder
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
    assert det.posterior_search_steps == 10
    with torch.no_grad():
        det.network_.encoder[-1].bias[:2] += 3.0
    searched = det.score_samples(X[:30])
    plain = det.set_params(posterior_search_steps=0).score_samples(X[:30])
    assert np.all(np.isfinite(searched))
    assert (searched - plain).mean() > 1.0
    # explanations weigh the same draws: their log p(x) is the score
    det.set_params(posterior_search_steps=10)
    np.testing.assert_allclose(det.explain(X[:30])["log_px"].to_numpy(), searched, rtol=1e-5)
    with pytest.raises(ValueError, match="posterior_search_steps"):
        VAEOutlierDetector(posterior_search_steps=-1).fit(X)


@pytest.mark.parametrize("relations", [True, False])
def test_the_contracted_hessian_is_the_directions_times_the_hessian_product(relations):
    # the search asks the likelihood for J^T H J directly (with relations, without taking
    # the products back through the shift): it must equal J^T (H J) of the full products
    frame = load_titanic()
    det = VAEOutlierDetector(latent_dim=3, hidden_layer_sizes=(16, 12), max_epochs=2, proposal_steps=0,
                             column_relations="linear" if relations else "none", handle_missing="model",
                             random_state=0, device="cpu").fit(frame)
    likelihood = copy.deepcopy(det.network_).double().likelihood
    assert (likelihood.relations is not None) is relations
    X = torch.tensor(det._validate_for_scoring(frame.head(50)), dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    params = torch.randn(50, likelihood.n_params, generator=generator, dtype=torch.float64)
    directions = torch.randn(3, 50, likelihood.n_params, generator=generator, dtype=torch.float64)
    value, gradient, along = likelihood.derivatives(params, X, directions)
    value_c, gradient_c, contracted = likelihood.derivatives(params, X, directions, contracted=True)
    torch.testing.assert_close(value_c, value, rtol=0, atol=0)
    torch.testing.assert_close(gradient_c, gradient, rtol=0, atol=0)
    torch.testing.assert_close(contracted, torch.einsum("knp,jnp->nkj", directions, along), rtol=1e-12, atol=1e-10)
