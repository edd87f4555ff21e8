"""``FactorizedLikelihood.column_log_prob`` gives each column the sum of its families' terms, in the families' order."""

import torch

from vaefilter.model.likelihoods import (
    CategoricalColumns,
    FactorizedLikelihood,
    GaussianColumns,
    MissingnessColumns,
    PositiveColumns,
    WholeNumberColumns,
    ZeroColumns,
)


def _reference(likelihood, params, x):
    """The per-family accumulation the method replaced: out[..., columns] += terms, family by family."""
    params = likelihood._shifted(params, x)
    shape = torch.broadcast_shapes(params.shape[:-1], x.shape[:-1]) + (likelihood.n_features,)
    out = params.new_zeros(shape)
    for family, family_params in zip(likelihood.families, likelihood._split_params(params)):
        out[..., family.columns] += family.log_prob(family_params, family.select(x))
    return out


def _likelihood(order):
    # columns scattered over the families (none contiguous), two adding families on column 4
    families = {
        "positive": PositiveColumns([4, 1], loc=[0.0, 1.0], scale=[1.0, 2.0], zero_modelled=[True, False],
                                    missing_modelled=[True, False]),
        "whole": WholeNumberColumns([5, 0], loc=[1.0, 3.0], scale=[2.0, 1.0], log_scale=[False, True],
                                    nonnegative=[True, True], missing_modelled=[False, True]),
        "gaussian": GaussianColumns([2], loc=[0.5], scale=[3.0]),
        "categorical": CategoricalColumns([3], [3], missing_modelled=[True]),
        "zero": ZeroColumns([4]),
        "missingness": MissingnessColumns([0, 3, 4]),
    }
    return FactorizedLikelihood([families[name] for name in order], 6, relations=True, discrete_relations=True)


def _inputs(likelihood, rows=40, draws=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    params = torch.randn(rows, draws, likelihood.n_params, generator=generator)
    x = torch.stack([torch.randint(0, 30, (rows,), generator=generator).float(),  # whole, log scale
                     torch.rand(rows, generator=generator) * 5,
                     torch.randn(rows, generator=generator),
                     torch.randint(0, 4, (rows,), generator=generator).float(),  # 3 is an unseen category
                     torch.randint(0, 3, (rows,), generator=generator).float(),  # zeros of the hurdle column
                     torch.randint(-1, 6, (rows,), generator=generator).float()], dim=1)
    x[::7, 0] = float("nan")
    x[3::9, 3] = float("nan")
    x[::5, 4] = float("nan")
    x[1::6, 5] = 2.5  # out of support
    with torch.no_grad():
        likelihood.relations.weight.copy_(torch.randn(likelihood.relations.weight.shape, generator=generator))
        likelihood.discrete.weight.copy_(torch.randn(likelihood.discrete.weight.shape, generator=generator))
    return params, x.unsqueeze(1)


def test_column_terms_are_the_same_floats_as_the_per_family_accumulation():
    # the orders build_likelihood gives (value families, then zero, then missingness) and ones it
    # does not: adding families first, and missingness before zero (the order of a column's terms
    # changes its float sum, so the method must keep it)
    for order in (("whole", "positive", "gaussian", "categorical", "zero", "missingness"),
                  ("missingness", "zero", "categorical", "positive", "gaussian", "whole"),
                  ("positive", "missingness", "whole", "zero", "gaussian", "categorical")):
        likelihood = _likelihood(order)
        params, x = _inputs(likelihood)
        found = likelihood.column_log_prob(params, x)
        expected = _reference(likelihood, params, x)
        assert found.shape == (40, 5, 6)
        assert torch.equal(found, expected), order
        assert torch.isfinite(found).all()


def test_column_terms_without_adding_families_and_with_one_draw():
    likelihood = FactorizedLikelihood([GaussianColumns([2, 0], loc=[0.0, 1.0], scale=[1.0, 2.0]),
                                       CategoricalColumns([1], [4])], 3)
    generator = torch.Generator().manual_seed(1)
    params = torch.randn(7, likelihood.n_params, generator=generator)
    x = torch.stack([torch.randn(7, generator=generator), torch.randint(0, 5, (7,), generator=generator).float(),
                     torch.randn(7, generator=generator)], dim=1)
    assert torch.equal(likelihood.column_log_prob(params, x), _reference(likelihood, params, x))


def test_the_categories_shift_is_index_add_into_the_expanded_parameters():
    # the shift is added as one broadcast tensor that is zero off the targets; the targets'
    # values must be the floats of adding the shift to each target alone
    likelihood = _likelihood(("whole", "positive", "gaussian", "categorical", "zero", "missingness"))
    params, x = _inputs(likelihood, seed=3)
    discrete = likelihood.discrete
    residuals = discrete.residuals(x)
    shift = residuals @ discrete.coefficients().T
    expected = params.index_add(-1, discrete.targets, shift.expand(*params.shape[:-1], shift.shape[-1]))
    found = discrete.shifted(params, residuals)
    assert found.shape == params.shape
    assert torch.equal(found, expected)
    assert not torch.equal(found, params)
