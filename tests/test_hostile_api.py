"""Hostile use of the Python API: a refused refit, parameters set after fit, odd arguments of the
smaller methods, empty Dask partitions. Each case used to corrupt a model or end in a raw error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vaefilter import VAEOutlierDetector

FAST = dict(latent_dim=2, hidden_layer_sizes=(8,), max_epochs=3, n_importance_samples=8, proposal_steps=2,
            epoch_selection="early_stopping", random_state=0)


def _table(n, seed=0):
    rng = np.random.RandomState(seed)
    return pd.DataFrame({"a": rng.normal(5, 1, n), "b": rng.normal(0, 2, n), "k": rng.choice(["x", "y"], n)})


@pytest.fixture
def detector():
    return VAEOutlierDetector(**FAST).fit(_table(200))


def test_a_refused_refit_leaves_the_fitted_model_as_it_was(detector):
    table = _table(200)
    before = detector.score_samples(table.head(20))
    kinds = [c.value_kind for c in detector.schema_.columns]
    with pytest.raises(ValueError, match="minimum of 2"):
        detector.fit(table.iloc[[3]])  # its schema (a: positive) replaced the fitted one under the old network
    assert [c.value_kind for c in detector.schema_.columns] == kinds
    np.testing.assert_array_equal(detector.score_samples(table.head(20)), before)


def test_a_refused_first_fit_leaves_the_detector_unfitted():
    from sklearn.exceptions import NotFittedError

    det = VAEOutlierDetector(**FAST)
    with pytest.raises(ValueError):
        det.fit(_table(200).iloc[[0]])
    with pytest.raises(NotFittedError):
        det.predict(_table(2))


@pytest.mark.parametrize("name, value", [("n_importance_samples", 0), ("posterior_search_steps", -3)])
def test_parameters_set_after_fit_are_checked_before_scoring(detector, name, value):
    from sklearn.utils._param_validation import InvalidParameterError

    detector.set_params(**{name: value})  # K=0 divided by zero deep in the scoring
    with pytest.raises(InvalidParameterError, match=name):
        detector.predict(_table(5))


def test_feature_names_out_follow_the_fitted_network(detector):
    detector.set_params(latent_dim=5)  # moves no fitted model
    assert len(detector.get_feature_names_out()) == 2
    out = detector.set_output(transform="pandas").transform(_table(4))
    assert out.shape == (4, 2) and list(out.columns) == list(detector.get_feature_names_out())


@pytest.mark.parametrize("percentiles", [("5", None), "ab", (True, None)])
def test_percentiles_that_are_not_numbers_are_refused(detector, percentiles):
    with pytest.raises(ValueError, match="must be numbers in"):
        detector.calibrate(threshold_percentiles=percentiles)


@pytest.mark.parametrize("alpha", [None, "0.1", True])
def test_drift_alpha_must_be_a_number(detector, alpha):
    with pytest.raises(ValueError, match="alpha must be a number in"):
        detector.drift_report(_table(10), alpha=alpha)


@pytest.mark.parametrize("n, error", [(2.5, TypeError), ("3", TypeError), (-1, ValueError), (True, TypeError)])
def test_relations_checks_its_count(n, error):
    det = VAEOutlierDetector(column_relations="linear", **FAST).fit(_table(200))
    with pytest.raises(error, match=r"n must be|n == -1"):  # was a raw 'slice indices must be integers'
        det.relations(n)
    assert len(det.relations(1)) <= 1


def test_explain_dataframe_on_empty_partitions(detector):
    dd = pytest.importorskip("dask.dataframe")
    from vaefilter.dask import explain_dataframe

    ddf = dd.from_pandas(_table(30).assign(row=np.arange(30)), npartitions=3)
    empty = ddf[ddf["a"] > 1e9]  # every partition filtered empty: the whole compute used to fail
    explained = explain_dataframe(detector, empty).compute()
    assert len(explained) == 0 and list(explained.columns[:4]) == ["log_px", "is_valid", "reason", "p_value"]
    some = ddf[ddf["row"] < 5]  # one partition with rows, two without
    assert len(explain_dataframe(detector, some).compute()) == 5


def test_a_numeric_model_counts_the_columns_of_a_frame_before_casting_them():
    det = VAEOutlierDetector(**FAST).fit(np.random.RandomState(0).normal(size=(200, 3)))
    frame = pd.DataFrame(np.random.RandomState(1).normal(size=(5, 4)), columns=list("pqrs")).assign(c="y")
    with pytest.raises(ValueError, match="X has 5 features, but VAEOutlierDetector is expecting 3"):
        det.predict(frame)  # was pandas' 'Cannot cast str dtype to float64', naming nothing


def test_categorical_features_for_an_array_are_refused_not_ignored():
    X = np.random.RandomState(0).randint(0, 3, size=(200, 3)).astype(float)
    with pytest.raises(ValueError, match="categorical_features names columns of a DataFrame"):
        VAEOutlierDetector(categorical_features=[0], **FAST).fit(X)


def test_categorical_features_as_a_boolean_mask():
    table = _table(200)
    det = VAEOutlierDetector(categorical_features=[False, False, True], **FAST).fit(table.astype({"k": object}))
    assert [c.kind for c in det.schema_.columns] == ["numeric", "numeric", "categorical"]
    with pytest.raises(ValueError, match="one entry per column"):
        VAEOutlierDetector(categorical_features=[False, True], **FAST).fit(table)


def test_dask_entry_points_refuse_a_pandas_frame_and_an_unfitted_detector(detector):
    pytest.importorskip("dask.dataframe")
    from sklearn.exceptions import NotFittedError

    from vaefilter.dask import explain_dataframe, score_dataframe

    for function in (score_dataframe, explain_dataframe):
        with pytest.raises(TypeError, match="expected a dask DataFrame"):
            function(detector, _table(5))
        with pytest.raises(NotFittedError):
            function(VAEOutlierDetector(), _table(5))


def test_plot_score_histogram_of_an_unfitted_detector():
    pytest.importorskip("matplotlib")
    from sklearn.exceptions import NotFittedError

    from vaefilter.plotting import plot_score_histogram

    with pytest.raises(NotFittedError):
        plot_score_histogram(VAEOutlierDetector(), {})


def test_decode_refuses_a_point_float32_cannot_carry_through_the_network(detector):
    with pytest.raises(ValueError, match="beyond float32's range at row 0, column 0"):
        detector.decode(np.array([[1e300, 0.0]]))  # gave NaN cells from a model without missing values

    import torch

    def overflowing(Z):  # a network whose float32 passes overflow at a point far out
        return torch.full((Z.shape[0], 3), float("nan"))

    detector.network_.expected_rows = overflowing
    with pytest.raises(ValueError, match="non-finite E\\[x \\| z\\] for column 'a'"):
        detector.decode(np.array([[0.0, 3e38]]))


def test_decode_keeps_floats_where_a_whole_number_would_not_fit_its_dtype():
    import torch

    table = _table(200).assign(n=np.random.RandomState(2).poisson(3, 200))
    det = VAEOutlierDetector(**FAST).fit(table)
    assert det.decode(np.zeros((1, 2)))["n"].dtype.kind == "i"
    names = list(det.schema_.names)
    expected = det.network_.expected_rows(torch.zeros(1, 2)).clone()
    expected[0, names.index("n")] = 1e30  # a count far past int64, as a point far out gives
    det.network_.expected_rows = lambda Z: expected
    out = det.decode(np.zeros((1, 2)))
    assert out["n"].dtype.kind == "f" and out["n"].iloc[0] == pytest.approx(1e30, rel=1e-6)  # was -2**63


def test_a_category_column_left_out_of_categorical_features_is_named_as_such():
    table = _table(200).astype({"k": "category"})
    with pytest.raises(ValueError, match="column 'k' has dtype category but is not in categorical_features"):
        VAEOutlierDetector(categorical_features=["a"], **FAST).fit(table)  # said 'neither ... nor categorical'


def test_plot_score_histogram_of_an_empty_batch_warns_of_nothing(detector):
    pytest.importorskip("matplotlib")
    import warnings

    from vaefilter.plotting import plot_score_histogram

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's 'invalid value encountered in divide'
        figure = plot_score_histogram(detector, {"empty": []})
    assert "n=0" in " ".join(t.get_text() for t in figure.axes[0].get_legend().get_texts())
