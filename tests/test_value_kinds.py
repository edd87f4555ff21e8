"""Column value kinds: whole numbers as masses, positive amounts on the log scale, zeros as a mass."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import integrate, stats

from vaefilter import VAEOutlierDetector
from vaefilter.columns import ColumnSpec, TableSchema, infer_value_kind
from vaefilter.model.likelihoods import (
    OUT_OF_SUPPORT_LOG_PROB,
    FactorizedLikelihood,
    PositiveColumns,
    WholeNumberColumns,
    ZeroColumns,
    build_likelihood,
)


def _whole(log_scale=False, nonnegative=True, loc=3.0, scale=2.0):
    return WholeNumberColumns([0], [loc], [scale], [log_scale], [nonnegative], min_variance=1e-3)


def _mass(family, params, values):
    x = torch.tensor(values, dtype=torch.float64).view(-1, 1)
    return family.double().log_prob(params.double().expand(len(values), -1), x).exp().squeeze(1).numpy()


@pytest.mark.parametrize("log_scale,nonnegative", [(False, True), (False, False), (True, True)])
@pytest.mark.parametrize("mean,raw", [(0.0, 0.0), (1.3, -2.0), (-4.0, 3.0), (0.2, -30.0)])
def test_whole_number_masses_sum_to_one_over_the_support(log_scale, nonnegative, mean, raw):
    family = _whole(log_scale, nonnegative, loc=1.0 if log_scale else 3.0, scale=1.0 if log_scale else 2.0)
    params = torch.tensor([[mean, raw]])
    low = 0 if nonnegative else -4000
    masses = _mass(family, params, list(range(low, 40000)))
    assert masses.sum() == pytest.approx(1.0, abs=1e-6)
    assert (masses <= 1.0 + 1e-12).all()


def test_whole_number_mass_is_a_logistic_bin_and_cannot_spike():
    family = _whole(loc=3.0, scale=2.0)
    mean, variance = 0.4, 0.5
    raw = math.log(math.expm1(variance - 1e-3))
    s = math.sqrt(3 * variance) / math.pi
    law = stats.logistic(loc=3.0 + 2.0 * mean, scale=2.0 * s)
    got = _mass(family, torch.tensor([[mean, raw]]), [2.0, 5.0, 0.0])
    np.testing.assert_allclose(got[:2], [law.cdf(2.5) - law.cdf(1.5), law.cdf(5.5) - law.cdf(4.5)], rtol=1e-6)
    assert got[2] == pytest.approx(law.cdf(0.5), rel=1e-6)  # the bottom bin takes the lower tail
    # the decoder asking for zero spread gives a mass of at most 1 (log 0), never a spike
    collapsed = family.double().log_prob(torch.tensor([[0.0, -1e4]], dtype=torch.float64),
                                         torch.tensor([[3.0]], dtype=torch.float64))
    assert -1e-5 < float(collapsed) <= 0.0


def test_whole_number_mass_is_accurate_for_large_values_in_float32():
    family = _whole(log_scale=True, loc=12.0, scale=1.0)
    params = torch.tensor([[0.3, 0.0]])
    x = 1_000_000.0
    f32 = float(family.log_prob(params, torch.tensor([[x]])))
    f64 = float(family.double().log_prob(params.double(), torch.tensor([[x]], dtype=torch.float64)))
    assert f32 == pytest.approx(f64, abs=1e-3)


def test_whole_number_support():
    family = _whole(nonnegative=True)
    params = torch.tensor([[0.0, 0.0]])
    values = torch.tensor([[2.5], [-1.0], [2.0]])
    log_prob = family.log_prob(params.expand(3, -1), values).squeeze(1)
    assert log_prob[0] == log_prob[1] == OUT_OF_SUPPORT_LOG_PROB
    assert log_prob[2] > -10
    signed = _whole(nonnegative=False)
    assert float(signed.log_prob(params, torch.tensor([[-1.0]]))) > -10


def test_positive_columns_are_the_log_normal_density_of_the_value():
    family = PositiveColumns([0], loc=[2.0], scale=[0.5], min_variance=1e-3)
    mean, raw = 0.3, -0.2
    variance = 1e-3 + math.log1p(math.exp(raw))
    law = stats.lognorm(s=0.5 * math.sqrt(variance), scale=math.exp(2.0 + 0.5 * mean))
    params = torch.tensor([[mean, raw]], dtype=torch.float64)
    x = torch.tensor([[3.0], [40.0]], dtype=torch.float64)
    got = family.double().log_prob(params.expand(2, -1), x).squeeze(1).numpy()
    np.testing.assert_allclose(got, law.logpdf([3.0, 40.0]), rtol=1e-9)
    density = lambda v: math.exp(float(family.log_prob(params, torch.tensor([[v]], dtype=torch.float64))))
    assert integrate.quad(density, 0, np.inf, limit=200)[0] == pytest.approx(1.0, rel=1e-6)
    assert float(family.log_prob(params, torch.tensor([[0.0]], dtype=torch.float64))) == OUT_OF_SUPPORT_LOG_PROB
    assert float(family.log_prob(params, torch.tensor([[-3.0]], dtype=torch.float64))) == OUT_OF_SUPPORT_LOG_PROB


def _hurdle():
    X = np.array([[0.0], [1.5], [2.0], [0.0], [7.0]])
    return build_likelihood(X, "auto", 1e-3, value_kinds={0: "nonnegative"}).double()


def test_nonnegative_columns_are_a_mass_at_zero_plus_a_density_above():
    likelihood = _hurdle()
    assert [type(f) for f in likelihood.families] == [PositiveColumns, ZeroColumns]
    params = torch.tensor([[0.2, -0.5, 0.7]], dtype=torch.float64)  # mean, raw variance, zero logit
    at_zero = math.exp(float(likelihood.log_prob(params, torch.tensor([[0.0]], dtype=torch.float64))))
    assert at_zero == pytest.approx(1 / (1 + math.exp(-0.7)))
    density = lambda v: math.exp(float(likelihood.log_prob(params, torch.tensor([[v]], dtype=torch.float64))))
    above = integrate.quad(density, 0, np.inf, limit=200)[0]
    assert at_zero + above == pytest.approx(1.0, rel=1e-6)
    assert float(likelihood.log_prob(params, torch.tensor([[-1.0]], dtype=torch.float64))) < OUT_OF_SUPPORT_LOG_PROB + 10


def test_positive_summed_in_place_and_derivatives_match_the_per_column_path():
    torch.manual_seed(0)
    family = PositiveColumns([0, 1, 2], loc=[0.1, 1.0, -0.5], scale=[1.0, 0.5, 2.0], min_variance=1e-3,
                             zero_modelled=[True, False, False], missing_modelled=[False, True, False]).double()
    params = torch.randn(4, 6, dtype=torch.float64)
    x = torch.tensor([[0.0, 2.0, 1.0], [3.0, float("nan"), 0.5], [-1.0, 1.0, 2.0], [1.0, 1.0, 0.0]],
                     dtype=torch.float64)
    expected = family.log_prob(params, x).sum(-1)
    torch.testing.assert_close(family._summed_log_prob_in_place(params, x), expected)
    directions = torch.randn(3, 4, 6, dtype=torch.float64)
    value, gradient, along = family.derivatives(params, x, directions)
    torch.testing.assert_close(value, expected)
    reference = super(PositiveColumns, family)
    with torch.enable_grad():
        p = params.clone().requires_grad_(True)
        total = family.log_prob(p, x).sum()
        (auto_gradient,) = torch.autograd.grad(total, [p], create_graph=True)
        auto_along = torch.stack([torch.autograd.grad(auto_gradient, [p], d, retain_graph=True)[0] for d in directions])
    assert reference is not None
    torch.testing.assert_close(gradient, auto_gradient.detach())
    torch.testing.assert_close(along, auto_along)


def test_inferred_value_kinds():
    assert infer_value_kind([0, 1] * 20 + [np.nan]) == ("binary", False)
    assert infer_value_kind([0, 3, 1, 2])[0] == "count"
    assert infer_value_kind([-2, 3, 1]) == ("integer", False)
    assert infer_value_kind([0.5, 3.2, 100.0]) == ("positive", False)
    assert infer_value_kind([0.0, 3.2, 100.0]) == ("nonnegative", False)
    assert infer_value_kind([-0.5, 3.2]) == ("continuous", False)
    assert infer_value_kind([1.0, 2.0, 3e7]) == ("positive", False)  # past float32's exact integers
    # counts over orders of magnitude choose the log scale, narrow ones the identity
    spread = np.round(np.exp(np.random.RandomState(0).normal(5, 2, size=500)))
    assert infer_value_kind(spread) == ("count", True)
    assert infer_value_kind(np.random.RandomState(0).randint(40, 60, size=500)) == ("count", False)


def test_zeros_and_ones_are_a_flag_only_when_a_count_would_have_shown_a_two():
    # half ones: a Poisson count of mean 1/2 leaves 40 rows all below 2 with probability 0.023 < 5%
    # (a flag), 30 rows with 0.059 (not enough to tell: a count)
    assert infer_value_kind([0, 1] * 20)[0] == "binary"
    assert infer_value_kind([0, 1] * 15)[0] == "count"
    assert infer_value_kind([0] * 900 + [1] * 100)[0] == "binary"
    # an edge pixel of digits, a rare event: one 1 in 110 rows says nothing against a count
    assert infer_value_kind([0] * 109 + [1])[0] == "count"
    assert infer_value_kind([1] * 100)[0] == "binary"
    assert infer_value_kind([1] * 5)[0] == "count"


def test_a_two_in_a_sparse_zero_one_column_is_scored_not_out_of_support():
    rng = np.random.RandomState(0)
    train = pd.DataFrame({"a": rng.normal(size=300), "rare": (rng.rand(300) < 0.01).astype(float),
                          "flag": (rng.rand(300) < 0.5).astype(float)})
    detector = VAEOutlierDetector(max_epochs=5, random_state=0).fit(train)
    assert [c.value_kind for c in detector.schema_.columns] == ["continuous", "count", "binary"]
    rows = pd.DataFrame({"a": [0.0, 0.0, 0.0], "rare": [0.0, 2.0, 0.0], "flag": [1.0, 1.0, 2.0]})
    scores = detector.score_samples(rows)
    # the count's law prices the 2 (no 1,000-nat support cost); a 2 in the flag is out of support
    assert scores[0] - scores[1] < -OUT_OF_SUPPORT_LOG_PROB / 10
    assert scores[0] - scores[2] > -OUT_OF_SUPPORT_LOG_PROB / 2
    reasons = detector.explain(rows)["reason"].tolist()
    assert "out of support" not in reasons[1] and "rare=2" in reasons[1]
    assert "out of support: 2 in a column that was always 0 or 1" in reasons[2]


def test_column_kinds_override_and_are_checked():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.5, 1.5, 2.5, 3.5]})
    schema = TableSchema.fit(frame, None, column_kinds={"a": "continuous"})
    assert [c.value_kind for c in schema.columns] == ["continuous", "positive"]
    with pytest.raises(ValueError, match="'b' to be 'count'"):
        TableSchema.fit(frame, None, column_kinds={"b": "count"})
    with pytest.raises(ValueError, match="does not have"):
        TableSchema.fit(frame, None, column_kinds={"zzz": "count"})
    assert [c.value_kind for c in TableSchema.fit(frame, None, infer_kinds=False).columns] == ["continuous"] * 2


def test_schemas_written_before_value_kinds_load_with_todays_meaning():
    old = {"columns": [{"name": "a", "kind": "numeric", "categories": [], "has_missing": False, "dtype": "float64"},
                       {"name": "b", "kind": "binary", "categories": [], "has_missing": False, "dtype": "bool"}]}
    schema = TableSchema.from_dict(old)
    assert [c.value_kind for c in schema.columns] == ["continuous", "binary"]
    assert ColumnSpec("c", "categorical").value_kind == "categorical"


def test_categories_declared_by_the_dtype_but_absent_from_training_are_never_seen():
    frame = pd.DataFrame({"c": pd.Categorical(["a", "b", "a"], categories=["a", "b", "never"])})
    schema = TableSchema.fit(frame)
    assert schema.columns[0].categories == ["a", "b"]
    assert schema.encode(pd.DataFrame({"c": ["never"]}))[0, 0] == 2
    assert schema.describe_cell(0, 2.0) == "a category never seen in training"


@pytest.fixture(scope="module")
def amounts_detector():
    rng = np.random.RandomState(0)
    n = 600
    size = rng.lognormal(1.0, 0.8, size=n)
    frame = pd.DataFrame({
        "items": rng.poisson(3 * size).astype(np.int64),
        "price": np.round(size * rng.lognormal(2.0, 0.3, size=n), 2),
        "discount": np.where(rng.rand(n) < 0.4, 0.0, np.round(rng.uniform(0.5, 5.0, size=n), 2)),
        "shop": pd.Categorical(rng.choice(["north", "south"], size=n)),
    })
    detector = VAEOutlierDetector(latent_dim=2, hidden_layer_sizes=(32,), max_epochs=40, proposal_steps=20,
                                  posterior_search_steps=0, n_importance_samples=20, random_state=0,
                                  device="cpu").fit(frame)
    return detector, frame


def test_fitted_schema_and_families_follow_the_kinds(amounts_detector):
    detector, _ = amounts_detector
    assert {c.name: c.value_kind for c in detector.schema_.columns} == {
        "items": "count", "price": "positive", "discount": "nonnegative", "shop": "categorical"}
    kinds = [type(f).__name__ for f in detector.network_.likelihood.families]
    assert kinds == ["WholeNumberColumns", "PositiveColumns", "CategoricalColumns", "ZeroColumns"]


def test_generated_rows_respect_the_kinds(amounts_detector):
    detector, frame = amounts_detector
    drawn = detector.sample(400, random_state=1)
    assert (drawn["items"] == np.round(drawn["items"])).all() and (drawn["items"] >= 0).all()
    assert (drawn["price"] > 0).all()
    assert (drawn["discount"] >= 0).all() and 0.1 < (drawn["discount"] == 0).mean() < 0.7
    decoded = detector.decode(np.zeros((1, 2)))
    # the mean on the original scale, not on the log scale the model works on
    assert 0.2 * frame["price"].median() < float(decoded["price"].iloc[0]) < 5 * frame["price"].median()


def test_explain_names_the_broken_support_first(amounts_detector):
    detector, frame = amounts_detector
    rows = frame.iloc[:3].astype({"items": float})
    rows.loc[rows.index[0], "items"] = 2.5
    rows.loc[rows.index[1], "price"] = -float(rows["price"].iloc[1])
    rows.loc[rows.index[2], "discount"] = -1.0
    reasons = detector.explain(rows)["reason"].tolist()
    assert "items=2.5 (" in reasons[0] and "2.5 in a column that was always a whole number" in reasons[0]
    assert ": price=-" in reasons[1] and "in a column that was always positive" in reasons[1]
    assert ": discount=-1 (" in reasons[2] and "never negative" in reasons[2]


def test_unit_errors_on_a_positive_column_are_equal_shifts(amounts_detector):
    detector, frame = amounts_detector
    base = frame.iloc[:200]
    up, down = base.copy(), base.copy()
    up["price"] = up["price"] * 1000
    down["price"] = down["price"] / 1000
    # the density, not the fixture's 20-draw bound, which lies 90 nats low on the x1000 rows
    params = detector.get_params()
    detector.set_params(n_importance_samples=200, posterior_search_steps=10)
    try:
        typical = detector.score_samples(base)
        # on the log scale x1000 and /1000 are the same distance from the data
        cost_up = typical - detector.score_samples(up)
        cost_down = typical - detector.score_samples(down)
    finally:
        detector.set_params(**params)
    assert np.median(cost_up) > 20 and np.median(cost_down) > 20
    # measured 86.5 and 29.0 nats (trained on the 16-sample bound; 52.6 and 44.7 on the ELBO): the
    # Jacobian alone puts x1000 2 log(1000) = 13.8 nats above /1000, and the fitted law's lower tail
    # is the heavier. On the linear scale the two would differ by orders of magnitude.
    assert 0.25 < np.median(cost_up) / np.median(cost_down) < 4.0


def test_likelihood_gaussian_keeps_every_numeric_column_gaussian():
    rng = np.random.RandomState(0)
    X = rng.poisson(5, size=(100, 3)).astype(float)
    detector = VAEOutlierDetector(likelihood="gaussian", latent_dim=1, hidden_layer_sizes=(8,), max_epochs=2,
                                  proposal_steps=0, n_importance_samples=2, random_state=0, device="cpu").fit(X)
    assert [type(f).__name__ for f in detector.network_.likelihood.families] == ["GaussianColumns"]
    assert isinstance(detector.network_.likelihood, FactorizedLikelihood)


def test_a_model_file_written_before_value_kinds_loads_and_scores_as_it_did():
    """tests/data/titanic_before_value_kinds.vf was written by the code before value kinds (commit 7811a70)."""
    import json
    from pathlib import Path

    from vaefilter.datasets import load_titanic
    from vaefilter.persistence import load_model

    data = Path(__file__).parent / "data"
    expected = json.loads((data / "titanic_before_value_kinds.json").read_text())
    detector = load_model(data / "titanic_before_value_kinds.vf")
    # today's meaning of the old kinds: every numeric column Gaussian, as then
    assert {c.value_kind for c in detector.schema_.columns} == {"continuous", "categorical"}
    assert detector.column_kinds is None and detector.min_variance == 0.1
    start, stop = expected["rows"]
    rows = load_titanic().iloc[start:stop]
    np.testing.assert_allclose(detector.score_samples(rows), expected["log_px"], rtol=1e-6, atol=1e-4)


def test_info_and_report_show_the_value_kinds(amounts_detector, tmp_path, capsys):
    from vaefilter.cli import main
    from vaefilter.persistence import save_model
    from vaefilter.report import build_report

    detector, frame = amounts_detector
    path = tmp_path / "m.vf"
    save_model(detector, path)
    assert main(["info", "-m", str(path)]) == 0
    out = capsys.readouterr().out
    assert "  items: count" in out and "  price: positive" in out and "  discount: nonnegative" in out
    html = build_report(detector, frame.iloc[:50])
    assert "<td>count" in html and "<td>nonnegative</td>" in html and "1 positive" in html


@pytest.mark.parametrize("family", [
    WholeNumberColumns([0, 1, 2], [1.0, 0.0, 2.0], [2.0, 1.0, 0.5], [False, False, True], [True, False, True], 1e-3,
                       missing_modelled=[False, True, False]),
    ZeroColumns([0, 1, 2]),
])
def test_cellwise_hessians_equal_the_batched_hessian_vector_products(family):
    torch.manual_seed(0)
    family = family.double()
    n_params = family.n_params
    params = torch.randn(5, n_params, dtype=torch.float64)
    x = torch.tensor([[0.0, -2.0, 3.0], [4.0, float("nan"), 0.0], [1.0, 1.0, 17.0], [2.5, 0.0, 1.0],
                      [0.0, 5.0, 250.0]], dtype=torch.float64)
    directions = torch.randn(4, 5, n_params, dtype=torch.float64)
    value, gradient, along = family.derivatives(params, x, directions)
    with torch.enable_grad():
        p = params.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(family.summed_log_prob(p, x).sum(), [p], create_graph=True)
        (batched,) = torch.autograd.grad(g, [p], grad_outputs=directions, is_grads_batched=True)
    torch.testing.assert_close(value, family.summed_log_prob(params, x))
    torch.testing.assert_close(gradient, g.detach())
    torch.testing.assert_close(along, batched)


def test_fit_column_kinds_flag_overrides_and_is_checked(tmp_path, capsys):
    from vaefilter.cli import main
    from vaefilter.persistence import load_model

    rng = np.random.default_rng(0)
    train = tmp_path / "t.csv"
    pd.DataFrame({"items": rng.poisson(3, 200), "price=eur": rng.lognormal(2, 0.5, 200).round(2)}).to_csv(train, index=False)
    small = ["--epochs", "2", "--hidden", "8", "--latent-dim", "2", "--importance-samples", "4",
             "--proposal-steps", "0", "-q"]
    model = tmp_path / "m.vf"
    # the last '=' splits NAME=KIND, so a column named 'price=eur' can be declared
    assert main(["fit", str(train), "-o", str(model), "--column-kinds", "items=continuous",
                 "price=eur=continuous", *small]) == 0
    kinds = {c.name: c.value_kind for c in load_model(model).schema_.columns}
    assert kinds == {"items": "continuous", "price=eur": "continuous"}
    # a kind the training values do not have is refused with the column named
    assert main(["fit", str(train), "-o", str(model), "--column-kinds", "price=eur=count", *small]) == 2
    assert "price=eur" in capsys.readouterr().err
    assert main(["fit", str(train), "-o", str(model), "--column-kinds", "items=whole", *small]) == 2
    assert "'items=whole': the kind must be one of continuous" in capsys.readouterr().err
