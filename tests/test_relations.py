"""Linear relations between columns (``column_relations='linear'``): a proper likelihood that states exact relations."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from vaefilter import VAEOutlierDetector
from vaefilter.model.likelihoods import (
    FactorizedLikelihood,
    GaussianColumns,
    PositiveColumns,
    WholeNumberColumns,
)
from vaefilter.persistence import load_model, save_model


def _gaussian_likelihood(seed=0, n=4, min_variance=0.1):
    family = GaussianColumns(range(n), loc=np.arange(n, dtype=float), scale=np.linspace(1, 3, n),
                             min_variance=min_variance).double()
    likelihood = FactorizedLikelihood([family], n, relations=True).double()
    with torch.no_grad():
        likelihood.relations.weight.copy_(torch.randn(n, n, generator=torch.Generator().manual_seed(seed),
                                                      dtype=torch.float64))
    return likelihood, family


def test_gaussian_columns_with_relations_are_the_full_covariance_gaussian():
    # u = mean + (I - B)^-1 eps, eps ~ N(0, D): the row's density is N(mean, A^-1 D A^-T) on the
    # standardised scale, with the Jacobian of the standardisation; a shift with the wrong sign,
    # the wrong triangle or a residual taken on the raw scale misses it by nats
    likelihood, family = _gaussian_likelihood()
    generator = torch.Generator().manual_seed(1)
    params = torch.randn(5, 8, generator=generator, dtype=torch.float64)
    x = torch.randn(5, 4, generator=generator, dtype=torch.float64) * 2 + 1
    found = likelihood.log_prob(params, x)
    B = likelihood.relations.coefficients().detach().numpy()
    inverse = np.linalg.inv(np.eye(4) - B)
    scale = family.scale.numpy()
    for i in range(5):
        mean, raw = params[i, :4].numpy(), params[i, 4:].numpy()
        variance = 0.1 + np.log1p(np.exp(raw))
        covariance = inverse @ np.diag(variance) @ inverse.T
        u = (x[i].numpy() - family.loc.numpy()) / scale
        expected = stats.multivariate_normal(mean, covariance).logpdf(u) - np.log(scale).sum()
        assert float(found[i]) == pytest.approx(expected, abs=1e-9)
    # the per-column terms sum to the row's, and the first column has no parents
    torch.testing.assert_close(likelihood.column_log_prob(params, x).sum(-1), found)
    torch.testing.assert_close(likelihood.column_log_prob(params, x)[:, 0], family.log_prob(params, x)[:, 0])


def test_derivatives_with_relations_match_autograd():
    # the posterior search's Newton steps take the gradient and Hessian through the shift
    likelihood, _ = _gaussian_likelihood(seed=2)
    generator = torch.Generator().manual_seed(3)
    params = torch.randn(6, 8, generator=generator, dtype=torch.float64)
    x = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    x[0, 1] = float("nan")  # a missing parent: no residual, no derivative through it
    likelihood.families[0].missing_modelled[1] = True
    directions = torch.randn(3, 6, 8, generator=generator, dtype=torch.float64)
    assert_derivatives_match_autograd(likelihood, params, x, directions)


def assert_derivatives_match_autograd(likelihood, params, x, directions):
    """``likelihood.derivatives`` against autograd's gradient and batched Hessian-vector products."""
    value, gradient, along = likelihood.derivatives(params, x, directions)
    with torch.enable_grad():
        p = params.clone().requires_grad_(True)
        total = likelihood.log_prob(p, x)
        (g,) = torch.autograd.grad(total.sum(), [p], create_graph=True)
        (h,) = torch.autograd.grad(g, [p], grad_outputs=directions, is_grads_batched=True)
    torch.testing.assert_close(value, total.detach())
    torch.testing.assert_close(gradient, g.detach())
    torch.testing.assert_close(along, h.detach())


def test_whole_numbers_with_relations_sum_to_one():
    # a count whose location moves with a Gaussian parent and a log-scale count child:
    # for each parent value the children's masses over their support still sum to one
    gaussian = GaussianColumns([0], loc=[0.0], scale=[1.0], min_variance=0.05)
    counts = WholeNumberColumns([1, 2], loc=[3.0, 1.0], scale=[2.0, 0.7], log_scale=[False, True],
                                nonnegative=[True, True], min_variance=0.05)
    likelihood = FactorizedLikelihood([gaussian, counts], 3, relations=True)
    with torch.no_grad():
        likelihood.relations.weight.copy_(torch.tensor([[0, 0, 0], [0.8, 0, 0], [-0.5, 0.6, 0.0]]))
    params = torch.tensor([[0.2, 0.1, 0.3, -0.2, -1.0, -0.5]])
    grid = torch.arange(0, 400, dtype=torch.float32)
    for parent in (-1.5, 0.0, 2.0):
        a, b = torch.meshgrid(grid[:60], grid, indexing="ij")
        x = torch.stack([torch.full_like(a, parent), a, b], -1).reshape(-1, 3)
        terms = likelihood.column_log_prob(params, x)
        total = torch.logsumexp(terms[:, 1] + terms[:, 2], 0)
        assert float(total) == pytest.approx(0.0, abs=2e-3)


def _related_table(n, seed):
    # whole-number width = high - low exactly, and a log-area twice a log-radius
    rng = np.random.RandomState(seed)
    low = rng.poisson(40, n)
    high = low + rng.poisson(30, n)
    radius = np.exp(rng.normal(1.0, 0.3, n))
    return pd.DataFrame({"width": high - low, "low": low, "high": high, "radius": radius,
                         "area": math.pi * radius**2 * np.exp(rng.normal(0, 0.01, n))})


@pytest.fixture(scope="module")
def related_fits():
    train, test = _related_table(1000, 0), _related_table(400, 1)
    # 20 proposal refit steps, not 200: the refit moves only the encoder, and both modes get the same
    params = dict(latent_dim=2, hidden_layer_sizes=(32, 32), max_epochs=50, proposal_steps=20, random_state=0,
                  device="cpu")
    fits = {mode: VAEOutlierDetector(column_relations=mode, **params).fit(train) for mode in ("none", "linear")}
    return fits, test


def test_relations_raise_the_held_out_likelihood_of_related_columns(related_fits):
    # measured 2026-12-01: 'linear' above 'none' by 3.1-3.3 nats/row here (an exact integer
    # difference and a 1% log-linear relation, which the factorised decoder must code in z)
    fits, test = related_fits
    gain = fits["linear"].score_samples(test).mean() - fits["none"].score_samples(test).mean()
    assert gain > 1.0


def test_a_broken_relation_is_blamed_on_a_related_column(related_fits):
    fits, test = related_fits
    detector = fits["linear"]
    broken = test.iloc[:50].copy()
    broken["high"] = broken["high"] + 9  # every column's own range is fine; width != high - low
    scores = detector.score_samples(broken)
    assert np.mean(scores < detector.score_samples(test.iloc[:50])) > 0.95
    deficits = detector.explain(broken)[list(test.columns)]
    named = deficits.idxmax(axis=1)
    assert named.isin(["width", "low", "high"]).mean() > 0.9


def test_samples_keep_the_relations(related_fits):
    fits, _ = related_fits
    drawn = fits["linear"].sample(2000, random_state=0)
    # measured: 91-93% of draws keep width = high - low exactly, 7% without relations
    assert np.mean(drawn["high"] - drawn["low"] == drawn["width"]) > 0.8
    assert np.mean(drawn["width"] >= 0) > 0.99


def test_relations_survive_a_model_file_and_old_files_load_without_them(related_fits, tmp_path):
    fits, test = related_fits
    path = tmp_path / "m.vaefilter"
    save_model(fits["linear"], path)
    loaded = load_model(path)
    assert loaded.column_relations == "linear" and loaded.network_.likelihood.relations is not None
    np.testing.assert_array_equal(loaded.score_samples(test), fits["linear"].score_samples(test))
    # a network description written before relations existed has no 'relations' entry
    config = fits["none"].network_.likelihood.config()
    config.pop("relations")
    assert FactorizedLikelihood.from_config(config).relations is None


def test_positive_zero_and_missing_parents_have_no_residual():
    positive = PositiveColumns([0], loc=[0.0], scale=[1.0], min_variance=0.1, zero_modelled=[True],
                               missing_modelled=[True])
    child = GaussianColumns([1], loc=[0.0], scale=[1.0], min_variance=0.1)
    likelihood = FactorizedLikelihood([positive, child], 2, relations=True)
    with torch.no_grad():
        likelihood.relations.weight.fill_(5.0)
    params = torch.zeros(1, 4)
    child_term = lambda first: float(likelihood.column_log_prob(params, torch.tensor([[first, 0.0]]))[0, 1])
    alone = float(child.log_prob(params[:, 2:], torch.tensor([[0.0]]))[0, 0])
    # a zero (scored by the zero family) and a missing cell move the child by nothing
    assert child_term(0.0) == pytest.approx(alone)
    assert child_term(float("nan")) == pytest.approx(alone)
    assert child_term(math.e) < alone - 1  # log e = 1 standardised: the child's location moves by 5


def test_relations_table_names_the_learned_relation(related_fits):
    fits, _ = related_fits
    table = fits["linear"].relations(3)
    assert list(table.columns) == ["column", "parent", "coefficient"] and len(table) == 3
    # 'high' is width + low: both its parents carry large coefficients
    top = table.iloc[0]
    assert top["column"] in ("high", "area") and abs(top["coefficient"]) > 0.5
    assert fits["none"].relations().empty


def test_info_and_report_show_the_relations(related_fits, tmp_path, capsys):
    from vaefilter.cli import main
    from vaefilter.report import build_report

    fits, test = related_fits
    path = tmp_path / "m.vaefilter"
    save_model(fits["linear"], path)
    assert main(["info", "--model", str(path)]) == 0
    out = capsys.readouterr().out
    assert "column_relations=linear" in out and "strongest relations" in out
    assert "high <- " in out or "area <- " in out
    html = build_report(fits["linear"], test)
    assert "Strongest relations between columns" in html


def test_fit_from_the_shell_can_turn_relations_off(tmp_path, capsys):
    from vaefilter.cli import main

    train = tmp_path / "train.csv"
    _related_table(300, 0).to_csv(train, index=False)
    for mode in ("none", "linear"):
        model = tmp_path / f"{mode}.vaefilter"
        assert main(["fit", str(train), "-o", str(model), "--epochs", "3", "--hidden", "16", "--latent-dim", "2",
                     "--proposal-steps", "5", "--column-relations", mode, "-q"]) == 0
        assert load_model(model).column_relations == mode
        assert (load_model(model).network_.likelihood.relations is None) == (mode == "none")
