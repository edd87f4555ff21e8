"""The posterior search's flag threshold, chosen per model at fit time (``posterior_search_tolerance``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vaefilter import VAEOutlierDetector
from vaefilter.datasets import load_titanic
from vaefilter.persistence import ModelFileError, load_model, pack_model_file, save_model, unpack_model_file
from vaefilter.scoring.posterior_search import SEARCH_THRESHOLD, raised_threshold

SMALL = dict(latent_dim=2, hidden_layer_sizes=(16,), n_importance_samples=32, max_epochs=10, proposal_steps=0,
             handle_missing="model", random_state=0, device="cpu")


def test_no_tolerance_or_no_flagged_row_keeps_the_fixed_threshold():
    m, gain = np.array([1.0, 3.0, 5.0]), np.array([0.0, 0.0, 0.0])
    assert raised_threshold(m, gain, 0.0) == SEARCH_THRESHOLD
    assert raised_threshold(np.array([0.5, 1.5]), np.zeros(2), 1.0) == SEARCH_THRESHOLD
    assert raised_threshold(np.array([]), np.array([]), 1.0) == SEARCH_THRESHOLD


def test_gains_within_the_tolerance_leave_only_rows_beyond_every_held_out_one():
    m, gain = np.array([1.0, 2.5, 7.0, 4.0]), np.array([0.0, 0.001, 0.002, -0.001])
    assert raised_threshold(m, gain, 0.002) == 7.0
    # the same gains, a tighter tolerance: their sum plus its standard error crosses it at the last row
    assert raised_threshold(m, gain, 0.001) == 4.0


def test_the_threshold_stops_below_the_first_row_that_crosses_the_tolerance():
    # rows in order of misplacement: 2.5, 3, 4 (gain 0.1: the running sum / 5 crosses 0.001 there), 5
    m, gain = np.array([5.0, 1.0, 4.0, 2.5, 3.0]), np.array([0.0, 0.0, 0.1, 0.0001, 0.0002])
    assert raised_threshold(m, gain, 0.001) == 3.0
    # a first flagged row that crosses alone keeps the fixed threshold
    assert raised_threshold(np.array([2.5, 3.0]), np.array([1.0, 0.0]), 0.001) == SEARCH_THRESHOLD


def test_a_loss_offsets_later_gains_and_noisy_gains_count_their_standard_error():
    m = np.array([2.5, 3.0, 4.0])
    # the search made the first row's estimate worse (a negative gain): with it, the sum plus its
    # standard error, (-0.01 + 0.012) / 3 + sqrt(0.01^2 + 0.012^2) / 3 = 0.0059, stays within 0.006
    assert raised_threshold(m, np.array([-0.01, 0.012, 0.0]), 0.006) == 4.0
    # without it, 0.012 / 3 + 0.012 / 3 = 0.008 crosses at the second row
    assert raised_threshold(m, np.array([0.0, 0.012, 0.0]), 0.006) == 2.5


@pytest.fixture(scope="module")
def titanic_fits():
    frame = load_titanic()
    train, test = frame.iloc[:700], frame.iloc[700:]
    fits = {tol: VAEOutlierDetector(**SMALL, posterior_search_tolerance=tol).fit(train) for tol in (0.0, 0.005, 100.0)}
    return fits, test


def test_the_fit_gives_up_at_most_the_tolerance_on_its_held_out_rows(titanic_fits):
    fits, _ = titanic_fits
    exact, default, lax = fits[0.0], fits[0.005], fits[100.0]
    assert exact.search_threshold_ == SEARCH_THRESHOLD
    assert SEARCH_THRESHOLD <= default.search_threshold_ <= lax.search_threshold_
    # the threshold is chosen after training: the same network, the same held-out (calibration) rows
    for name, weight in exact.network_.state_dict().items():
        assert np.array_equal(weight.numpy(), default.network_.state_dict()[name].numpy()), name
    assert exact.validation_scores_.shape == default.validation_scores_.shape
    given_up = np.mean(exact.validation_scores_.astype(np.float64) - default.validation_scores_)
    assert given_up <= 0.005 + 1e-6
    # with a tolerance no gain reaches, only rows beyond every held-out row's misplacement are searched
    searched = lax._log_marginal(lax._validate_for_scoring(load_titanic().iloc[:700])).searched
    assert searched.mean() < exact._log_marginal(exact._validate_for_scoring(load_titanic().iloc[:700])).searched.mean()


def test_scoring_searches_the_rows_above_the_fitted_threshold(titanic_fits):
    fits, test = titanic_fits
    detector = fits[0.0]
    flagged_at_2 = detector._log_marginal(detector._validate_for_scoring(test)).searched
    assert flagged_at_2.any(), "the fixture's model must flag rows for this test to mean anything"
    unsearched = VAEOutlierDetector(**{**detector.get_params(), "posterior_search_steps": 0})
    unsearched.__dict__.update({k: v for k, v in detector.__dict__.items() if k.endswith("_")})
    raised = VAEOutlierDetector(**detector.get_params())
    raised.__dict__.update({k: v for k, v in detector.__dict__.items() if k.endswith("_")})
    raised.search_threshold_ = 1e9
    assert not raised._log_marginal(raised._validate_for_scoring(test)).searched.any()
    np.testing.assert_array_equal(raised.score_samples(test), unsearched.score_samples(test))
    np.testing.assert_array_equal(raised.decision_function(test), unsearched.decision_function(test))
    assert not np.array_equal(detector.score_samples(test), unsearched.score_samples(test))


def test_model_files_keep_the_threshold_and_older_files_search_above_the_fixed_one(titanic_fits, tmp_path):
    fits, test = titanic_fits
    detector = fits[100.0]
    path = tmp_path / "m.vf"
    save_model(detector, path)
    loaded = load_model(path)
    assert loaded.search_threshold_ == detector.search_threshold_ > SEARCH_THRESHOLD
    assert loaded.posterior_search_tolerance == 100.0
    np.testing.assert_array_equal(loaded.score_samples(test), detector.score_samples(test))

    header_bytes, payload = unpack_model_file(path.read_bytes())
    header = json.loads(header_bytes)
    del header["fitted"]["search_threshold_"], header["params"]["posterior_search_tolerance"]
    older = tmp_path / "older.vf"
    older.write_bytes(pack_model_file(header, payload))
    loaded = load_model(older)
    assert loaded.search_threshold_ == SEARCH_THRESHOLD and loaded.posterior_search_tolerance == 0.0

    header["fitted"]["search_threshold_"] = -1.0
    forged = tmp_path / "forged.vf"
    forged.write_bytes(pack_model_file(header, payload))
    with pytest.raises(ModelFileError, match="search_threshold_"):
        load_model(forged)


def test_a_pickle_from_before_the_tolerance_scores_as_it_did(titanic_fits):
    fits, test = titanic_fits
    detector = fits[0.0]
    state = detector.__getstate__()
    del state["search_threshold_"], state["posterior_search_tolerance"], state["training_samples"]
    older = VAEOutlierDetector.__new__(VAEOutlierDetector)
    older.__setstate__(state)
    assert older.search_threshold_ == SEARCH_THRESHOLD and older.posterior_search_tolerance == 0.0
    assert older.training_samples == 1  # what trained the networks of pickles from before the parameter
    np.testing.assert_array_equal(older.score_samples(test), detector.score_samples(test))
