"""VAEOutlierDetector as users meet it: scores, band, model selection, persistence, bad input."""

import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conftest import correlated_gaussian
from vaefilter import VAEOutlierDetector

FAST = dict(latent_dim=2, hidden_layer_sizes=(32,), max_epochs=40, n_importance_samples=32, random_state=0)


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.RandomState(0)
    X = correlated_gaussian(3000, rng)
    return VAEOutlierDetector(**FAST).fit(X), rng


def test_scores_are_log_densities_close_to_the_truth(fitted):
    from scipy.stats import multivariate_normal

    det, _ = fitted
    rng = np.random.RandomState(5)
    X = correlated_gaussian(2000, rng)
    base = np.random.RandomState(42)
    A = base.normal(size=(4, 4)) / 2.0
    truth = multivariate_normal(np.arange(4.0), A @ A.T + 0.2 * np.eye(4)).logpdf(X)
    # a fitted model cannot beat the true density on fresh data by more than noise
    assert det.score(X) < truth.mean() + 0.05
    assert det.score(X) > truth.mean() - 0.3


def test_corrupted_rows_score_below_clean_ones(fitted):
    det, _ = fitted
    rng = np.random.RandomState(1)
    clean = correlated_gaussian(500, rng)
    shifted = correlated_gaussian(500, rng) + np.array([3.0, 0, 0, 0])
    swapped = correlated_gaussian(500, rng)[:, [3, 1, 2, 0]]
    for corrupted in (shifted, swapped):
        scores = det.score_samples(np.vstack([clean, corrupted]))
        labels = np.r_[np.ones(len(clean)), np.zeros(len(corrupted))]
        assert roc_auc_score(labels, scores) >= 0.95


def test_default_band_flags_about_half_of_fresh_valid_rows(fitted):
    det, _ = fitted
    fresh = correlated_gaussian(5000, np.random.RandomState(2))
    rejected = (det.predict(fresh) == -1).mean()
    # 600 calibration rows: each percentile is known to about +-2%
    assert 0.42 <= rejected <= 0.58


def test_one_sided_band_flags_about_one_percent(fitted):
    det, _ = fitted
    fresh = correlated_gaussian(5000, np.random.RandomState(3))
    one_sided = pickle.loads(pickle.dumps(det))
    one_sided.calibrate(correlated_gaussian(3000, np.random.RandomState(4)), threshold_percentiles=(1, None))
    assert one_sided.thresholds_[1] is None
    rejected = (one_sided.predict(fresh) == -1).mean()
    assert 0.002 <= rejected <= 0.025


def test_decision_function_is_the_signed_distance_to_the_band(fitted):
    det, _ = fitted
    X = correlated_gaussian(50, np.random.RandomState(6))
    scores = det.score_samples(X)
    lower, upper = det.thresholds_
    full_k = pickle.loads(pickle.dumps(det)).set_params(sequential_decisions=False)
    np.testing.assert_allclose(full_k.decision_function(X), np.minimum(scores - lower, upper - scores))
    # sequential decisions: rows decided early have the distance of their estimate at fewer draws, same sign
    assert np.array_equal(det.decision_function(X) >= 0, np.minimum(scores - lower, upper - scores) >= 0)
    np.testing.assert_array_equal(det.predict(X), np.where((scores >= lower) & (scores <= upper), 1, -1))


def test_more_importance_samples_never_lower_the_mean_score():
    X = correlated_gaussian(600, np.random.RandomState(0))
    # 20 refit steps, not 200: a looser proposal, so the steps K=1 -> 10 -> 100 are larger
    # (+0.015, +0.007 nats/row against +0.005, +0.006), at a fifth of the cost
    det = VAEOutlierDetector(**{**FAST, "proposal_steps": 20}).fit(X)
    test = correlated_gaussian(300, np.random.RandomState(9))
    means = []
    for K in (1, 10, 100):
        det.set_params(n_importance_samples=K)
        means.append(det.score(test))
    assert means[0] <= means[1] <= means[2] + 0.01


def test_fit_is_reproducible_and_row_scores_do_not_depend_on_the_batch():
    X = correlated_gaussian(400, np.random.RandomState(0))
    # reproducibility needs no converged model: a few epochs and refit steps (both seeded paths run)
    params = {**FAST, "max_epochs": 10, "proposal_steps": 20}
    a = VAEOutlierDetector(**params).fit(X)
    b = VAEOutlierDetector(**params).fit(X)
    new = correlated_gaussian(30, np.random.RandomState(1))
    np.testing.assert_array_equal(a.score_samples(new), b.score_samples(new))
    alone = np.array([a.score_samples(new[i : i + 1])[0] for i in range(len(new))])
    np.testing.assert_allclose(alone, a.score_samples(new), rtol=1e-6)
    c = VAEOutlierDetector(**{**params, "random_state": 1}).fit(X)
    assert not np.allclose(a.score_samples(new), c.score_samples(new))


def test_fitted_attributes(fitted):
    det, _ = fitted
    assert det.n_features_in_ == 4
    assert det.n_iter_ == len(det.loss_curve_) == len(det.validation_loss_curve_)
    assert 1 <= det.best_epoch_ <= det.n_iter_
    assert det.validation_scores_.shape == (600,)
    assert det.loss_curve_[-1] < det.loss_curve_[0]
    lower, upper = det.thresholds_
    assert lower == pytest.approx(np.percentile(det.validation_scores_, 25))
    assert upper == pytest.approx(np.percentile(det.validation_scores_, 75))


def test_any_numeric_dtype_in_float_out():
    X = np.random.RandomState(0).randint(0, 5, size=(200, 3))
    for dtype in (np.int32, np.int64, np.float32, np.float64):
        det = VAEOutlierDetector(**{**FAST, "max_epochs": 3, "proposal_steps": 5}).fit(X.astype(dtype))
        assert det.score_samples(X.astype(dtype)).dtype == np.float64


def test_pipeline_with_a_dataframe_and_grid_search_by_mean_log_likelihood():
    rng = np.random.RandomState(0)
    # three latent factors in six columns: latent_dim=3 must beat latent_dim=1
    latent = rng.normal(size=(900, 3))
    X = latent @ rng.normal(size=(3, 6)) + 0.05 * rng.normal(size=(900, 6))
    frame = pd.DataFrame(X * 10 + 100, columns=[f"sensor_{i}" for i in range(6)])
    # 40 epochs and 20 refit steps: latent_dim=3 ahead by 0.75 nats/row (fold std 0.13-0.18; 0.58 at
    # 60 epochs and the default 200 steps), at a third of the cost
    pipe = make_pipeline(StandardScaler(), VAEOutlierDetector(**{**FAST, "max_epochs": 40, "proposal_steps": 20}))
    search = GridSearchCV(pipe, {"vaeoutlierdetector__latent_dim": [1, 3]}, cv=3).fit(frame)
    assert search.best_params_ == {"vaeoutlierdetector__latent_dim": 3}
    assert search.cv_results_["mean_test_score"][1] > search.cv_results_["mean_test_score"][0]
    # the refitted pipeline was fitted on the whole DataFrame and predicts on one
    assert set(search.best_estimator_.predict(frame.head(20))) <= {-1, 1}
    # cross_val_score only needs finite scores: a few epochs do
    assert np.isfinite(cross_val_score(pipe.set_params(vaeoutlierdetector__max_epochs=5), frame, cv=2)).all()


def test_dataframe_feature_names_are_checked():
    frame = pd.DataFrame(correlated_gaussian(200, np.random.RandomState(0)), columns=list("abcd"))
    det = VAEOutlierDetector(**{**FAST, "max_epochs": 3, "proposal_steps": 5}).fit(frame)
    np.testing.assert_array_equal(det.feature_names_in_, list("abcd"))
    with pytest.raises(ValueError, match="feature names"):
        det.score_samples(frame[list("abdc")])


@pytest.mark.parametrize("dumper", ["joblib", "pickle"])
def test_persistence_gives_identical_scores(fitted, tmp_path, dumper):
    det, _ = fitted
    X = correlated_gaussian(100, np.random.RandomState(7))
    path = tmp_path / "m.bin"
    if dumper == "joblib":
        joblib.dump(det, path)
        loaded = joblib.load(path)
    else:
        path.write_bytes(pickle.dumps(det))
        loaded = pickle.loads(path.read_bytes())
    np.testing.assert_array_equal(loaded.score_samples(X), det.score_samples(X))
    assert loaded.thresholds_ == det.thresholds_


def test_pickled_state_holds_a_cpu_state_dict_not_a_module(fitted):
    import torch

    det, _ = fitted
    state = det.__getstate__()
    assert "network_" not in state
    tensors = state["_network_checkpoint"]["state_dict"].values()
    assert all(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in tensors)
    assert hasattr(det, "network_")  # pickling left the live detector alone


def test_device_cuda_without_a_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="CUDA"):
        VAEOutlierDetector(device="cuda", **FAST).fit(np.zeros((10, 2)))


def test_verbose_shows_a_progress_bar(capsys):
    X = correlated_gaussian(50, np.random.RandomState(0))
    VAEOutlierDetector(**{**FAST, "max_epochs": 2, "proposal_steps": 5, "verbose": 1}).fit(X)
    assert "epoch" in capsys.readouterr().err


def test_linear_model_with_no_hidden_layers():
    X = correlated_gaussian(300, np.random.RandomState(0))
    det = VAEOutlierDetector(**{**FAST, "hidden_layer_sizes": (), "proposal_steps": 5}).fit(X)
    assert np.isfinite(det.score_samples(np.zeros((3, 4)))).all()


@pytest.mark.parametrize(
    "make_bad, message",
    [
        (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X), "NaN"),
        (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 5, np.inf, X), "infinity"),
        (lambda X: X[:, :3], "features"),
        (lambda X: X.astype(str).astype(object) + "x", "could not convert.*not a real number is at row 0, column 'x0'"),
        (lambda X: X[:0], "0 sample"),
        (lambda X: np.full((2, 4), 1e39), "too large for float32"),
    ],
    ids=["nan", "inf", "wrong-width", "strings", "empty", "overflow"],
)
def test_bad_input_to_scoring_raises_a_clear_value_error(fitted, make_bad, message):
    det, _ = fitted
    X = correlated_gaussian(10, np.random.RandomState(0))
    with pytest.raises(ValueError, match=message):
        det.score_samples(make_bad(X))


def test_bad_input_to_fit_raises_a_clear_value_error():
    with pytest.raises(ValueError, match="1 sample"):
        VAEOutlierDetector(**FAST).fit(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="0 sample"):
        VAEOutlierDetector(**FAST).fit(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="NaN"):
        VAEOutlierDetector(**FAST).fit(np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 4.0]]))
    with pytest.raises(ValueError, match="threshold_percentiles"):
        VAEOutlierDetector(**{**FAST, "threshold_percentiles": (80, 20)}).fit(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="threshold_percentiles"):
        VAEOutlierDetector(**{**FAST, "threshold_percentiles": (None, None)}).fit(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="bernoulli"):
        VAEOutlierDetector(**{**FAST, "likelihood": "bernoulli"}).fit(np.array([[0.0, 2.0]] * 5))


def test_bernoulli_likelihood_on_binary_and_grey_values():
    rng = np.random.RandomState(0)
    binary = (rng.rand(400, 3) < [0.2, 0.5, 0.8]).astype(float)
    grey = rng.beta(2, 5, size=(400, 2))
    det = VAEOutlierDetector(**{**FAST, "likelihood": "bernoulli", "proposal_steps": 5}).fit(np.hstack([binary, grey]))
    kinds = sorted(family.kind for family in det.network_.likelihood.families)
    assert kinds == ["bernoulli", "continuous_bernoulli"]
    scores = det.score_samples(np.array([[0, 1, 1, 0.2, 0.3], [0, 1, 1, 0.2, 1.7]]))
    assert scores[1] < scores[0] - 500  # 1.7 is outside [0, 1]


def test_a_row_with_minus_zero_scores_as_the_row_with_zero():
    X = np.random.RandomState(0).normal(size=(80, 3))
    detector = VAEOutlierDetector(latent_dim=2, hidden_layer_sizes=(8,), max_epochs=5, n_importance_samples=8,
                                  proposal_steps=0, random_state=0).fit(X)
    row = np.array([[0.0, 0.5, -0.2]])
    negative_zero = row.copy()
    negative_zero[0, 0] = -0.0
    assert np.signbit(negative_zero[0, 0])
    np.testing.assert_array_equal(detector.score_samples(negative_zero), detector.score_samples(row))
