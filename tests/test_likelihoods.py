"""Each column family is a normalised distribution in the column's original units."""

import math

import numpy as np
import torch
from scipy import integrate, stats

from vaefilter.model.likelihoods import (
    OUT_OF_SUPPORT_LOG_PROB,
    UNSEEN_CATEGORY_PROB,
    BernoulliColumns,
    CategoricalColumns,
    ColumnFamily,
    ContinuousBernoulliColumns,
    GaussianColumns,
    MissingnessColumns,
    build_likelihood,
)


def test_gaussian_is_the_density_of_the_original_value():
    family = GaussianColumns([0], loc=[10.0], scale=[4.0], min_variance=0.1)
    params = torch.tensor([[0.5, 0.3]])  # standardised mean 0.5, raw variance 0.3
    variance = 0.1 + math.log1p(math.exp(0.3))
    x = torch.tensor([[13.0]])
    expected = stats.norm(10.0 + 4.0 * 0.5, 4.0 * math.sqrt(variance)).logpdf(13.0)
    assert float(family.log_prob(params, x)) == pytest_approx(expected)


def pytest_approx(value):
    import pytest

    return pytest.approx(value, rel=1e-5)


def test_variance_floor_bounds_the_density():
    family = GaussianColumns([0], loc=[0.0], scale=[1.0], min_variance=0.1)
    params = torch.tensor([[0.0, -1e4]])  # the decoder asks for zero variance
    assert float(family.log_prob(params, torch.tensor([[0.0]]))) <= -0.5 * math.log(2 * math.pi * 0.1) + 1e-5


def test_continuous_bernoulli_integrates_to_one():
    family = ContinuousBernoulliColumns([0])
    for logit in (-3.0, 0.0, 0.01, 2.5):
        density = lambda x: math.exp(float(family.log_prob(torch.tensor([[logit]]), torch.tensor([[x]]))))
        assert integrate.quad(density, 0, 1)[0] == pytest_approx(1.0)


def test_bernoulli_mass_and_out_of_support_values():
    family = BernoulliColumns([0])
    logit = torch.tensor([[0.7]])
    p1 = math.exp(float(family.log_prob(logit, torch.tensor([[1.0]]))))
    p0 = math.exp(float(family.log_prob(logit, torch.tensor([[0.0]]))))
    assert p0 + p1 == pytest_approx(1.0)
    assert float(family.log_prob(logit, torch.tensor([[2.0]]))) == OUT_OF_SUPPORT_LOG_PROB


def test_categorical_masses_sum_to_one_with_the_unseen_bucket():
    family = CategoricalColumns([0], sizes=[3])
    logits = torch.tensor([[0.2, -1.0, 2.0]])
    masses = [math.exp(float(family.log_prob(logits, torch.tensor([[float(c)]])))) for c in range(4)]
    assert sum(masses) == pytest_approx(1.0)
    assert masses[3] == pytest_approx(UNSEEN_CATEGORY_PROB)


def test_missing_cells_cost_their_missingness_or_the_out_of_support_penalty():
    X = np.array([[1.0, 0.0], [np.nan, 1.0], [3.0, 0.0], [4.0, 1.0]])
    modelled = build_likelihood(X, "auto", 0.1, missing_columns=[0])
    assert any(isinstance(f, MissingnessColumns) for f in modelled.families)
    params = torch.zeros(1, modelled.n_params)
    row = torch.tensor([[np.nan, 1.0]], dtype=torch.float32)
    per_column = modelled.column_log_prob(params, row)[0]
    assert float(per_column[0]) == pytest_approx(math.log(0.5))  # logit 0: P(missing) = 1/2
    unmodelled = build_likelihood(X[[0, 2, 3]], "auto", 0.1)
    assert float(unmodelled.column_log_prob(torch.zeros(1, unmodelled.n_params), row)[0, 0]) == OUT_OF_SUPPORT_LOG_PROB


def test_auto_gives_bernoulli_to_binary_columns_only():
    X = np.array([[0.0, 1.5], [1.0, 2.5], [1.0, 0.5]])
    kinds = {f.kind: f.columns.tolist() for f in build_likelihood(X, "auto", 0.1).families}
    assert kinds == {"gaussian": [1], "bernoulli": [0]}


def _gaussian_case(seed=0, n_columns=5):
    generator = torch.Generator().manual_seed(seed)
    family = GaussianColumns(list(range(n_columns)), loc=np.arange(n_columns) * 3.0,
                             scale=np.linspace(0.5, 4.0, n_columns), min_variance=1e-3)
    params = torch.randn(7, 20, 2 * n_columns, generator=generator)  # rows x K draws x params
    x = torch.randn(7, 1, n_columns, generator=generator) * 3.0
    return family, params, x


def test_gaussian_in_place_sum_matches_the_per_column_log_prob():
    family, params, x = _gaussian_case()
    expected = family.log_prob(params, x).sum(-1)
    with torch.inference_mode():
        summed = family.summed_log_prob(params, x)
        # the in-place path must not touch the decoder output it reads
        assert family._summed_log_prob_in_place(params.clone(), x) is not None
    assert summed.shape == (7, 20)
    torch.testing.assert_close(summed, expected, rtol=1e-5, atol=1e-4)


def test_gaussian_in_place_sum_leaves_its_inputs_alone():
    family, params, x = _gaussian_case(seed=1)
    params_before, x_before = params.clone(), x.clone()
    with torch.inference_mode():
        family.summed_log_prob(params, x)
    assert torch.equal(params, params_before) and torch.equal(x, x_before)


def test_summed_log_prob_keeps_gradients_and_missing_cells_on_the_per_column_path():
    family, params, x = _gaussian_case(seed=2)
    params.requires_grad_(True)
    family.summed_log_prob(params, x).sum().backward()
    assert params.grad is not None and torch.isfinite(params.grad).all()
    x = x.clone()
    x[0, 0, 1] = float("nan")
    with torch.inference_mode():
        summed = family.summed_log_prob(params.detach(), x)
    # the missing cell costs the out-of-support penalty (missingness not modelled)
    assert float(summed[0, 0]) < OUT_OF_SUPPORT_LOG_PROB / 2
    torch.testing.assert_close(summed, family.log_prob(params.detach(), x).sum(-1), rtol=1e-5, atol=1e-4)


def test_gaussian_in_place_sum_with_the_missing_cell_mask_always_on(monkeypatch):
    # a GPU always takes the masked path (reading isnan().any() would stall it)
    from vaefilter.model import likelihoods

    family, params, x = _gaussian_case(seed=3)
    x[2, 0, 4] = float("nan")
    family.missing_modelled[4] = True
    expected = family.log_prob(params, x).sum(-1)
    monkeypatch.setattr(likelihoods, "may_be_true", lambda mask: True)
    with torch.inference_mode():
        torch.testing.assert_close(family.summed_log_prob(params, x), expected, rtol=1e-5, atol=1e-4)
        x_complete = x.nan_to_num(0.5)
        torch.testing.assert_close(family.summed_log_prob(params, x_complete),
                                   family.log_prob(params, x_complete).sum(-1), rtol=1e-5, atol=1e-4)


def test_gaussian_closed_form_derivatives_match_autograd():
    # the posterior search's Hessian of the Gaussian columns, with a missing cell
    # whose missingness is modelled (scored elsewhere) and one that is not (a constant cost)
    generator = torch.Generator().manual_seed(0)
    family = GaussianColumns(range(3), [1.0, -2.0, 0.5], [2.0, 0.5, 3.0], min_variance=0.1,
                             missing_modelled=[True, False, False]).double()
    params = torch.randn(6, 6, generator=generator, dtype=torch.float64) * 2
    x = torch.randn(6, 3, generator=generator, dtype=torch.float64) * 3
    x[0, 0] = x[1, 1] = float("nan")
    directions = torch.randn(4, 6, 6, generator=generator, dtype=torch.float64)
    closed = family.derivatives(params, x, directions)
    autograd = ColumnFamily.derivatives(family, params, x, directions)
    for found, expected in zip(closed, autograd):
        torch.testing.assert_close(found, expected, rtol=1e-12, atol=1e-12)
    assert closed[1][0, 0] == 0 and closed[1][1, 1] == 0  # nothing to move for a missing cell


def test_student_t_is_a_density_of_the_original_value_with_learned_tails():
    from vaefilter.model.likelihoods import StudentTColumns

    family = StudentTColumns([0], loc=[10.0], scale=[4.0], min_variance=0.1)
    with torch.no_grad():
        family.raw_df.fill_(0.2)
    df = 2.0 + math.e
    params = torch.tensor([[0.5, 0.3]])
    scale = 4.0 * math.sqrt(0.1 + math.log1p(math.exp(0.3)))
    for value in (13.0, -40.0):
        expected = stats.t(df, 10.0 + 4.0 * 0.5, scale).logpdf(value)
        assert float(family.log_prob(params, torch.tensor([[value]]))) == pytest_approx(expected)
    # the tails are learned: the degrees of freedom get a gradient
    family.log_prob(params, torch.tensor([[-40.0]])).sum().backward()
    assert family.raw_df.grad is not None and float(family.raw_df.grad.abs()) > 0
    draws = family.sample(params.expand(20000, 2), generator=torch.Generator().manual_seed(0)).squeeze(-1)
    assert stats.kstest(draws.numpy(), stats.t(df, 12.0, scale).cdf).pvalue > 0.01


def test_whole_number_closed_form_derivatives_match_autograd():
    # the posterior search's Hessian of whole-number columns: interior bins, the
    # bottom bin of a column never negative, a log-scale column, far tails, and
    # cells with a constant cost (missing, modelled or not; out of support)
    from vaefilter.model.likelihoods import WholeNumberColumns

    generator = torch.Generator().manual_seed(0)
    family = WholeNumberColumns(range(4), [3.0, 0.0, 1.0, 5.0], [2.0, 1.5, 0.7, 4.0],
                                log_scale=[False, False, True, False], nonnegative=[True, False, True, False],
                                min_variance=1e-3, missing_modelled=[True, False, False, False]).double()
    params = torch.randn(40, 8, generator=generator, dtype=torch.float64) * 2
    params[:5, :4] = torch.tensor([40.0, -30.0, 8.0, -25.0], dtype=torch.float64)  # bins deep in a tail
    x = torch.randint(0, 12, (40, 4), generator=generator).double()
    x[:, 1] -= 6  # negative values where the column allows them
    x[0, 0] = x[1, 1] = float("nan")
    x[2, 2], x[3, 3] = 2.5, -1.5  # not whole numbers: out of support
    x[4, 0] = x[5, 2] = 0.0  # the bottom bin
    directions = torch.randn(3, 40, 8, generator=generator, dtype=torch.float64)
    closed = family.derivatives(params, x, directions)
    autograd = ColumnFamily.derivatives(family, params, x, directions)
    for found, expected in zip(closed, autograd):
        torch.testing.assert_close(found, expected, rtol=1e-9, atol=1e-9)
    assert closed[1][0, 0] == 0 and closed[1][2, 2] == 0 and closed[1][0, 4] == 0
