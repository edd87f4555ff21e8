"""Categories as parents (``column_relations='linear'``): numbers and categories scored given the categories before them."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from vaefilter import VAEOutlierDetector
from vaefilter.model.likelihoods import (
    BernoulliColumns,
    CategoricalColumns,
    FactorizedLikelihood,
    GaussianColumns,
)
from vaefilter.model.relations import DiscreteParents

from test_relations import assert_derivatives_match_autograd


def _mixed_likelihood(seed=0, numeric_relations=True):
    # columns: 0, 1 Gaussian; 2 binary; 3 categorical with three training categories
    generator = torch.Generator().manual_seed(seed)
    gaussian = GaussianColumns([0, 1], loc=[1.0, -2.0], scale=[2.0, 0.5], min_variance=0.1)
    binary = BernoulliColumns([2], missing_modelled=[True])
    categorical = CategoricalColumns([3], [3], missing_modelled=[True])
    likelihood = FactorizedLikelihood([gaussian, binary, categorical], 4, relations=numeric_relations,
                                      discrete_relations=True).double()
    training = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 2.0],
                             [0.0, 0.0, 1.0, 2.0]], dtype=torch.float64)
    likelihood.discrete.set_frequencies(training)
    with torch.no_grad():
        likelihood.discrete.weight.copy_(2 * torch.randn(likelihood.discrete.weight.shape, generator=generator,
                                                         dtype=torch.float64))
        if numeric_relations:
            likelihood.relations.weight.fill_(0.7)
    return likelihood, gaussian


def test_the_frequencies_are_the_training_shares_of_each_category():
    likelihood, _ = _mixed_likelihood()
    # binary: 1 in 3 of 4 rows; categories 0, 1, 2 in 1, 1, 2 of 4 rows
    np.testing.assert_allclose(likelihood.discrete.frequencies.numpy(), [0.75, 0.25, 0.25, 0.5])


def test_a_number_given_its_category_is_the_shifted_gaussian():
    # without numeric relations: column 0's standardised location moves by
    # C_binary ([b = 1] - 0.75) + sum_c C_c ([code = c] - f_c); a residual taken
    # without the frequencies, or the wrong parent block, misses it by nats
    likelihood, gaussian = _mixed_likelihood(seed=1, numeric_relations=False)
    generator = torch.Generator().manual_seed(2)
    params = torch.randn(6, likelihood.n_params, generator=generator, dtype=torch.float64)
    x = torch.tensor([[0.3, -1.0, 1.0, 0.0], [2.0, -2.5, 0.0, 2.0], [-1.0, -2.0, 1.0, 1.0],
                      [0.0, -2.0, float("nan"), 1.0], [1.0, -1.0, 0.0, 3.0], [1.0, -1.0, 1.0, float("nan")]],
                     dtype=torch.float64)
    terms = likelihood.column_log_prob(params, x)
    C = likelihood.discrete.coefficients().detach().numpy()
    frequencies = likelihood.discrete.frequencies.numpy()
    for i in range(6):
        binary, code = x[i, 2].item(), x[i, 3].item()
        residual = np.zeros(4)
        if not math.isnan(binary):
            residual[0] = binary - frequencies[0]
        if not math.isnan(code) and code < 3:  # an unseen category (code 3) moves nothing
            residual[1:] = (np.arange(3) == code) - frequencies[1:]
        for j in range(2):
            location = params[i, j].item() + C[j] @ residual
            sd = math.sqrt(0.1 + math.log1p(math.exp(params[i, 2 + j].item())))
            u = (x[i, j].item() - gaussian.loc[j].item()) / gaussian.scale[j].item()
            expected = stats.norm(location, sd).logpdf(u) - math.log(gaussian.scale[j].item())
            assert terms[i, j].item() == pytest.approx(expected, abs=1e-9)


def test_the_categories_masses_still_sum_to_one():
    # the categorical column's logits move with the binary column before it: for
    # each z, the joint mass over every (binary, category) pair is still one
    likelihood, _ = _mixed_likelihood(seed=3)
    params = torch.randn(1, likelihood.n_params, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    grid = torch.tensor([[0.0, 0.0, b, c] for b in (0.0, 1.0) for c in (0.0, 1.0, 2.0, 3.0)], dtype=torch.float64)
    terms = likelihood.column_log_prob(params, grid)
    total = torch.logsumexp(terms[:, 2] + terms[:, 3], 0)
    assert total.item() == pytest.approx(0.0, abs=1e-9)
    # and the binary column does move them
    assert not torch.allclose(terms[:3, 3], terms[4:7, 3])


def test_derivatives_with_categories_match_autograd():
    # the posterior search's Newton steps: the categories' shift is constant in the parameters
    likelihood, _ = _mixed_likelihood(seed=5)
    generator = torch.Generator().manual_seed(6)
    params = torch.randn(4, likelihood.n_params, generator=generator, dtype=torch.float64)
    x = torch.tensor([[0.3, -1.0, 1.0, 0.0], [2.0, -2.5, 0.0, 2.0], [0.0, -2.0, float("nan"), 3.0],
                      [1.0, -1.0, 1.0, float("nan")]], dtype=torch.float64)
    directions = torch.randn(3, 4, likelihood.n_params, generator=generator, dtype=torch.float64)
    assert_derivatives_match_autograd(likelihood, params, x, directions)


@pytest.mark.parametrize("binary_logit", [None, 30.0])
def test_the_decoded_mean_is_the_mean_of_the_draws(binary_logit):
    # decode's E[x | z] averages the categories' shift over p(category | z); sample draws the
    # categories first and the numbers given them: the two must agree. Exact without links
    # between the discrete columns, or (the mean field's case) where the binary is certain
    likelihood, gaussian = _mixed_likelihood(seed=7)
    params = torch.randn(1, likelihood.n_params, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    if binary_logit is None:
        with torch.no_grad():
            likelihood.discrete.weight[2:] = 0  # the discrete columns' logits see nothing
    else:
        params[0, 4] = binary_logit  # the binary column's logit: 1 for sure, and the categories move with it
    draws = likelihood.sample(params.expand(40000, -1), generator=torch.Generator().manual_seed(9))
    mean = likelihood.mean(params)[0]
    for j in range(2):
        drawn = draws[:, j]
        assert mean[j].item() == pytest.approx(drawn.mean().item(), abs=4 * drawn.std().item() / 200)
    # the binary column's probability given z, and the categories drawn after it
    assert mean[2].item() == pytest.approx(draws[:, 2].mean().item(), abs=0.02)


def _grouped_table(n, seed):
    # a size set by the group (a species' body mass), and a length set by the size
    rng = np.random.RandomState(seed)
    group = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    size = np.select([group == "a", group == "b"], [10.0, 14.0], 18.0) + rng.normal(0, 0.5, n)
    return pd.DataFrame({"group": pd.Categorical(group, categories=["a", "b", "c"]), "size": size,
                         "length": 2 * size + rng.normal(0, 1.0, n), "noise": rng.normal(0, 1, n)})


@pytest.fixture(scope="module")
def grouped_fits():
    train, test = _grouped_table(1500, 0), _grouped_table(400, 1)
    # 20 proposal refit steps, not 200: the tests here read the likelihood's relations and draws, none
    # the encoder's fit (the swap's cost: 33.2 against 4.30 nats/row, as at 200 steps: 33.3, 4.30)
    params = dict(latent_dim=1, hidden_layer_sizes=(16,), max_epochs=40, proposal_steps=20, random_state=0,
                  device="cpu")
    return {mode: VAEOutlierDetector(column_relations=mode, **params).fit(train)
            for mode in ("numeric", "linear")}, test


def test_a_wrong_category_costs_more_with_the_categories_as_parents(grouped_fits):
    fits, test = grouped_fits
    swapped = test.copy()
    swapped["group"] = swapped["group"].map({"a": "b", "b": "c", "c": "a"}).astype(test["group"].dtype)
    drop = {mode: np.mean(fit.score_samples(test) - fit.score_samples(swapped)) for mode, fit in fits.items()}
    # measured 2026-12-01: the swap costs 33 nats/row with categories as parents, 4.3 with
    # numeric relations only (4.7 with none): latent_dim=1 has no room to code the group well
    assert drop["linear"] > drop["numeric"] + 15
    explained = fits["linear"].explain(swapped.iloc[:100])
    assert explained[["group", "size"]].max(axis=1).gt(explained[["length", "noise"]].max(axis=1)).mean() > 0.9


def test_the_relations_table_names_the_category(grouped_fits):
    fits, _ = grouped_fits
    table = fits["linear"].relations()
    about_size = table[(table["column"] == "size") & table["parent"].str.startswith("group=")]
    # size moves by about 2.5 of its standard deviations from group a to group c (measured: C 0.71 - (-0.65))
    shift = dict(zip(about_size["parent"], about_size["coefficient"]))
    assert shift["group=a"] < shift["group=b"] < shift["group=c"]
    assert shift["group=c"] - shift["group=a"] > 1.0
    assert not fits["numeric"].relations()["parent"].str.contains("=").any()


def test_draws_keep_each_category_s_numbers(grouped_fits):
    fits, _ = grouped_fits
    drawn = fits["linear"].sample(3000, random_state=0)
    means = drawn.groupby("group", observed=True)["size"].mean()
    assert means["a"] == pytest.approx(10, abs=1) and means["c"] == pytest.approx(18, abs=1)


def test_categories_alone_relate_to_each_other():
    # two discrete columns and no numeric one: the second's logits see the first
    likelihood = FactorizedLikelihood([BernoulliColumns([0]), CategoricalColumns([1], [2])], 2,
                                      relations=True, discrete_relations=True)
    assert isinstance(likelihood.discrete, DiscreteParents) and likelihood.relations is None
    assert likelihood.discrete.mask.tolist() == [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    # one discrete column alone has nothing to relate to
    assert FactorizedLikelihood([BernoulliColumns([0])], 1, discrete_relations=True).discrete is None
