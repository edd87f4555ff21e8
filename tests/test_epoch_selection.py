"""Choosing the epoch count by cross-validation (``epoch_selection``) and the snapshots it reads."""

import numpy as np
import pytest
import torch

import vaefilter.estimator as estimator_module
from vaefilter.estimator import training_loss_name
from vaefilter import VAEOutlierDetector
from vaefilter.model.likelihoods import build_likelihood
from vaefilter.model.network import VAENetwork
from vaefilter.model.training import TrainingConfig, train
from vaefilter.persistence import load_model, save_model

from test_persistence import _assemble, _parts

QUICK = dict(latent_dim=2, hidden_layer_sizes=(16,), n_importance_samples=16, proposal_steps=5,
             posterior_search_steps=0, random_state=0, epoch_selection="auto")


def _ppca_rows(n, seed=0, n_features=6):
    rng = np.random.RandomState(seed)
    W = np.random.RandomState(99).normal(size=(n_features, 2))
    return rng.normal(size=(n, 2)) @ W.T + 0.3 * rng.normal(size=(n, n_features))


def _network(X, seed=0):
    torch.manual_seed(seed)
    return VAENetwork(build_likelihood(X.numpy(), "gaussian", 1e-3), 2, (16,))


@pytest.mark.parametrize("with_validation", [False, True])
def test_a_snapshot_is_the_run_stopped_there(with_validation):
    X = torch.as_tensor(_ppca_rows(60), dtype=torch.float32)
    X_val = X[:12] if with_validation else None
    config = TrainingConfig(max_epochs=40, batch_size=16, learning_rate=3e-3, n_iter_no_change=5, tol=1e-4)
    long = _network(X)
    history = train(long, X, X_val, config, seed=3, snapshots=(10, 25, 40))
    assert sorted(history.snapshots) == [10, 25, 40]
    for epochs in (10, 25):
        short = _network(X)
        train(short, X, X_val, TrainingConfig(**{**config.__dict__, "max_epochs": epochs}), seed=3)
        for name, value in short.state_dict().items():
            torch.testing.assert_close(history.snapshots[epochs][name], value, rtol=0, atol=0)
    for name, value in long.state_dict().items():
        torch.testing.assert_close(history.snapshots[40][name], value, rtol=0, atol=0)


def test_cross_validation_scores_held_out_rows_and_trains_the_best_count():
    # 40 rows of 6 columns and a wide network: it overfits long before 400 epochs, which held-out
    # folds see and training rows would not (their score only rises)
    X = _ppca_rows(40)
    detector = VAEOutlierDetector(**{**QUICK, "hidden_layer_sizes": (64, 64), "epoch_selection": "cross_validation"},
                                  max_epochs=400).fit(X)
    counts = [epochs for epochs, _ in detector.epoch_scores_]
    assert counts == [25, 50, 100, 200, 400]
    scores = dict(detector.epoch_scores_)
    chosen = max(detector.epoch_scores_, key=lambda pair: pair[1])[0]
    assert chosen < 400 and scores[400] < scores[chosen] - 0.5
    assert all(np.isfinite(list(scores.values())))
    # every row not held out for the band is trained on: no early-stopping curve
    assert detector.validation_loss_curve_ == [] and detector.n_iter_ <= chosen
    assert len(detector.loss_curve_) == detector.n_iter_


def test_auto_cross_validates_small_tables_only(monkeypatch):
    X = _ppca_rows(120)
    small = VAEOutlierDetector(**QUICK, max_epochs=50).fit(X)
    assert [epochs for epochs, _ in small.epoch_scores_] == [25, 50] and small.validation_loss_curve_ == []
    monkeypatch.setattr(estimator_module, "CV_EPOCHS_BELOW_ROWS", 100)
    large = VAEOutlierDetector(**QUICK, max_epochs=50).fit(X)
    assert large.epoch_scores_ is None and len(large.validation_loss_curve_) == large.n_iter_
    explicit = VAEOutlierDetector(**{**QUICK, "epoch_selection": "early_stopping"}, max_epochs=50).fit(_ppca_rows(60))
    assert explicit.epoch_scores_ is None


def test_auto_stops_early_where_there_is_nothing_to_choose():
    one_count = VAEOutlierDetector(**QUICK, max_epochs=40).fit(_ppca_rows(60))
    assert one_count.epoch_scores_ is None and one_count.validation_loss_curve_
    few_rows = VAEOutlierDetector(**QUICK, max_epochs=50).fit(_ppca_rows(6))
    assert few_rows.epoch_scores_ is None


def test_cross_validation_that_cannot_run_is_an_error_naming_why():
    with pytest.raises(ValueError, match="max_epochs >= 50.*got 40"):
        VAEOutlierDetector(**{**QUICK, "epoch_selection": "cross_validation"}, max_epochs=40).fit(_ppca_rows(60))
    with pytest.raises(ValueError, match="at least 6 rows to train on"):
        VAEOutlierDetector(**{**QUICK, "epoch_selection": "cross_validation"}, max_epochs=50).fit(_ppca_rows(6))
    with pytest.raises(ValueError, match="epoch_selection"):
        VAEOutlierDetector(epoch_selection="folds").fit(_ppca_rows(20))


def test_cross_validated_fits_are_reproducible():
    X = _ppca_rows(80)
    first = VAEOutlierDetector(**QUICK, max_epochs=50).fit(X)
    second = VAEOutlierDetector(**QUICK, max_epochs=50).fit(X)
    assert first.epoch_scores_ == second.epoch_scores_
    np.testing.assert_array_equal(first.score_samples(X), second.score_samples(X))
    other = VAEOutlierDetector(**{**QUICK, "random_state": 1}, max_epochs=50).fit(X)
    assert other.epoch_scores_ != first.epoch_scores_


def test_cross_fitted_calibration_trains_its_folds_for_the_chosen_count():
    detector = VAEOutlierDetector(**QUICK, max_epochs=50, calibration_folds=3).fit(_ppca_rows(90))
    assert detector.calibration_folds_ == 3 and detector.epoch_scores_ is not None
    assert len(detector.validation_scores_) == 90 and np.isfinite(detector.validation_scores_).all()


def test_epoch_scores_travel_and_older_files_stop_early(tmp_path):
    X = _ppca_rows(80)
    detector = VAEOutlierDetector(**QUICK, max_epochs=50).fit(X)
    path = tmp_path / "m.vf"
    save_model(detector, path)
    loaded = load_model(path)
    assert loaded.epoch_scores_ == detector.epoch_scores_ and loaded.epoch_selection == "auto"
    header, payload = _parts(path.read_bytes())
    del header["params"]["epoch_selection"], header["fitted"]["epoch_scores_"]
    older = tmp_path / "older.vf"
    older.write_bytes(_assemble(header, payload))
    old = load_model(older)
    # a refit of an older file's parameters trains as that version did
    assert old.epoch_selection == "early_stopping" and old.epoch_scores_ is None
    np.testing.assert_array_equal(old.score_samples(X), detector.score_samples(X))


def _fit_and_info(tmp_path, capsys, selection):
    from vaefilter.cli import main

    table = tmp_path / f"{selection}.csv"
    np.savetxt(table, _ppca_rows(80), delimiter=",", header="a,b,c,d,e,f", comments="", fmt="%.5f")
    model = tmp_path / f"{selection}.vf"
    assert main(["fit", str(table), "-o", str(model), "--epochs", "50", "--hidden", "16", "--latent-dim", "2",
                 "--importance-samples", "16", "--proposal-steps", "5", "--posterior-search-steps", "0",
                 "--epoch-selection", selection, "-q"]) == 0
    fit_message = capsys.readouterr().err
    assert main(["info", "-m", str(model)]) == 0
    return load_model(model), fit_message, capsys.readouterr().out


def test_the_cli_chooses_the_epoch_selection_and_info_says_how_the_count_was_chosen(tmp_path, capsys):
    detector, fit_message, info = _fit_and_info(tmp_path, capsys, "cross_validation")
    chosen = max(detector.epoch_scores_, key=lambda pair: pair[1])[0]
    assert [epochs for epochs, _ in detector.epoch_scores_] == [25, 50]
    assert f"(at most {chosen}: the count chosen by 3-fold cross-validation)" in fit_message
    training = next(line for line in info.splitlines() if line.startswith("training: "))
    assert f"epoch count {chosen} chosen by 3-fold cross-validation" in training
    for epochs, score in detector.epoch_scores_:
        assert f"{epochs}: {score:.3f}" in training
    assert f"for {detector.n_iter_} of at most {chosen} epochs" in training and "held-out rows'" not in training

    detector, fit_message, info = _fit_and_info(tmp_path, capsys, "early_stopping")
    assert detector.epoch_scores_ is None and "cross-validation" not in fit_message + info
    assert (f"training: {detector.n_iter_} of at most 50 epochs, early stopping on the held-out rows' "
            f"{training_loss_name(detector)}") in info


def test_the_report_says_how_the_epoch_count_was_chosen(tmp_path):
    pytest.importorskip("matplotlib")
    from vaefilter.report import build_report

    X = _ppca_rows(80)
    detector = VAEOutlierDetector(**QUICK, max_epochs=50).fit(X)
    page = build_report(detector, X)
    assert "Training: epoch count" in page and "3-fold cross-validation" in page
    assert "epoch count chosen by cross-validation" in page and f"best held-out {training_loss_name(detector)}" not in page


def test_a_count_whose_held_out_rows_fail_scores_minus_infinity_not_a_huge_number():
    assert estimator_module.epoch_criterion(np.r_[-np.inf, np.zeros(11)]) == -np.inf  # under 20 rows nothing is trimmed
    assert estimator_module.epoch_criterion(np.r_[np.nan, np.inf, np.zeros(10)]) == -np.inf
    assert estimator_module.epoch_criterion(np.r_[-np.inf, np.zeros(39)]) == 0.0  # the lowest 5% left out
    assert estimator_module.chosen_epoch_count([(25, -np.inf), (50, -np.inf)]) == 25
    assert estimator_module.chosen_epoch_count([(25, -np.inf), (50, -3.0)]) == 50


def test_minus_infinite_epoch_scores_are_written_and_read_back(tmp_path):
    detector = VAEOutlierDetector(**QUICK, max_epochs=50).fit(_ppca_rows(60))
    detector.epoch_scores_ = [(25, -np.inf), (50, -4.5)]
    save_model(detector, tmp_path / "m.vf")
    assert load_model(tmp_path / "m.vf").epoch_scores_ == [(25, -np.inf), (50, -4.5)]


def test_auto_keeps_the_early_stopping_rows_when_they_are_the_bands():
    X = _ppca_rows(100)
    detector = VAEOutlierDetector(**QUICK, max_epochs=50, calibration_fraction=0).fit(X)
    assert detector.epoch_scores_ is None and len(detector.validation_loss_curve_) > 0
    assert len(detector.validation_scores_) == 10  # the early-stopping rows, as before
    crossed = VAEOutlierDetector(**{**QUICK, "epoch_selection": "cross_validation"}, max_epochs=50,
                                 calibration_fraction=0).fit(X)
    assert crossed.epoch_scores_ is not None and len(crossed.validation_scores_) == 100  # documented: optimistic
    folded = VAEOutlierDetector(**QUICK, max_epochs=50, calibration_fraction=0, calibration_folds=3).fit(X)
    assert folded.epoch_scores_ is not None


def test_each_training_run_of_a_cross_validated_fit_has_its_own_progress_bar(capsys):
    pytest.importorskip("tqdm")
    VAEOutlierDetector(**QUICK, max_epochs=50, calibration_folds=2, verbose=1).fit(_ppca_rows(60))
    err = capsys.readouterr().err
    for title in ("vaefilter fit: epoch count, fold 1/3", "vaefilter fit: epoch count, fold 3/3",
                  "vaefilter fit: calibration fold 2/2"):
        assert title in err
    assert "val=" not in err  # no early-stopping rows: only the training loss


def test_the_epoch_scores_picture_marks_the_chosen_count_and_needs_cross_validation():
    pytest.importorskip("matplotlib")
    from vaefilter import plotting
    from vaefilter.report import build_report

    X = _ppca_rows(80)
    detector = VAEOutlierDetector(**QUICK, max_epochs=50).fit(X)
    chosen = max(detector.epoch_scores_, key=lambda pair: pair[1])[0]
    labels = plotting.plot_epoch_scores(detector).axes[0].get_legend_handles_labels()[1]
    assert any(label.startswith(f"chosen: {chosen} epochs") for label in labels)
    assert "cross-validated held-out log p(x) of each epoch count" in build_report(detector, X)
    stopped = VAEOutlierDetector(**{**QUICK, "epoch_selection": "early_stopping"}, max_epochs=50).fit(X)
    with pytest.raises(ValueError, match="not cross-validated"):
        plotting.plot_epoch_scores(stopped)
    assert "each epoch count" not in build_report(stopped, X)
