"""Cross-fitted calibration (``calibration_folds``): the band from out-of-fold scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vaefilter import VAEOutlierDetector
from vaefilter.persistence import load_model, save_model
from vaefilter.scoring.sequential import concatenate_records, sequential_log_marginal

from test_persistence import _assemble, _parts

FAST = dict(latent_dim=2, hidden_layer_sizes=(16,), n_importance_samples=20, max_epochs=8, proposal_steps=10,
            random_state=0)


def _rows(n, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 3))
    X[:, 1] += X[:, 0]
    return X


def test_every_row_is_a_calibration_row_scored_by_a_network_that_did_not_see_it(monkeypatch):
    import vaefilter.estimator as estimator

    X = _rows(60)
    trained, scored = {}, []
    train_network, estimate = estimator.VAEOutlierDetector._train_network, estimator.estimate_log_marginal

    def spy_train(self, X_all, train_rows, val_rows, *args, **kwargs):
        network, history, proposal = train_network(self, X_all, train_rows, val_rows, *args, **kwargs)
        trained[id(network)] = set(train_rows) | set(val_rows)
        return network, history, proposal

    def spy_estimate(network, rows, *args, **kwargs):
        # which rows of X a network scores, by their values (every row of X is distinct)
        found = [int(np.flatnonzero(np.all(np.isclose(X, r, atol=1e-6), axis=1))[0]) for r in rows.cpu().numpy()]
        result = estimate(network, rows, *args, **kwargs)
        scored.append((id(network), found, result.log_px))
        return result

    monkeypatch.setattr(estimator.VAEOutlierDetector, "_train_network", spy_train)
    monkeypatch.setattr(estimator, "estimate_log_marginal", spy_estimate)
    detector = VAEOutlierDetector(**FAST, calibration_folds=4).fit(X)
    assert detector.calibration_folds_ == 4 and len(detector.validation_scores_) == len(X)
    assert len(trained) == 5 and len(scored) == 4  # the final network and four fold networks
    final = [key for key, rows in trained.items() if len(rows) == len(X)]
    assert len(final) == 1, "the final network trains on every row (with its early-stopping rows)"
    for network, rows, _ in scored:
        assert network != final[0] and not set(rows) & trained[network], "a row scored by a network that saw it"
    assert sorted(r for _, rows, _ in scored for r in rows) == list(range(len(X)))
    # the band comes from those scores, row by row
    out_of_fold = np.empty(len(X))
    for _, rows, log_px in scored:
        out_of_fold[rows] = log_px
    np.testing.assert_array_equal(detector.validation_scores_, out_of_fold)


def test_the_band_and_margins_are_reproducible_and_sequential_decisions_work():
    X = _rows(120)
    first = VAEOutlierDetector(**FAST, calibration_folds=3).fit(X)
    second = VAEOutlierDetector(**FAST, calibration_folds=3).fit(X)
    assert first.thresholds_ == second.thresholds_
    np.testing.assert_array_equal(first.validation_scores_, second.validation_scores_)
    assert first.decision_margins_ == second.decision_margins_ and first.decision_margins_ is not None
    new = _rows(200, seed=2)
    full = VAEOutlierDetector(**FAST, calibration_folds=3, sequential_decisions=False).fit(X)
    np.testing.assert_array_equal(first.predict(new), full.predict(new))


def test_auto_cross_fits_small_tables_only():
    small = VAEOutlierDetector(**{**FAST, "max_epochs": 1, "proposal_steps": 0}, calibration_folds="auto")
    assert small.fit(_rows(499)).calibration_folds_ == 5 and len(small.validation_scores_) == 499
    assert small.fit(_rows(500)).calibration_folds_ is None and len(small.validation_scores_) == 100


def test_calibrate_on_new_rows_ends_cross_fitting_and_files_keep_it(tmp_path):
    detector = VAEOutlierDetector(**FAST, calibration_folds=2).fit(_rows(80))
    path = tmp_path / "m.vf"
    save_model(detector, path)
    loaded = load_model(path)
    assert loaded.calibration_folds == 2 and loaded.calibration_folds_ == 2
    # a file written before calibration_folds existed loads with the split
    header, payload = _parts(path.read_bytes())
    del header["params"]["calibration_folds"], header["fitted"]["calibration_folds_"]
    older = tmp_path / "older.vf"
    older.write_bytes(_assemble(header, payload))
    assert load_model(older).calibration_folds is None and load_model(older).calibration_folds_ is None
    header["params"]["calibration_folds"] = 1
    forged = tmp_path / "forged.vf"
    forged.write_bytes(_assemble(json.loads(json.dumps(header)), payload))
    with pytest.raises(ValueError, match="calibration_folds"):
        load_model(forged)
    detector.calibrate(_rows(30, seed=3))
    assert detector.calibration_folds_ is None and len(detector.validation_scores_) == 30


def test_bad_fold_counts_are_refused():
    with pytest.raises(ValueError, match="calibration_folds"):
        VAEOutlierDetector(calibration_folds=1).fit(_rows(20))
    with pytest.raises(ValueError, match="calibration_folds=30 needs at least as many rows"):
        VAEOutlierDetector(**FAST, calibration_folds=30).fit(_rows(20))


def test_records_of_folds_join_row_by_row():
    detector = VAEOutlierDetector(**FAST, sequential_decisions=False).fit(_rows(400))
    import torch

    X = torch.as_tensor(_rows(50, seed=4), dtype=torch.float32)
    parts = [sequential_log_marginal(detector.network_, X[rows], 40, 7, detector.thresholds_, None, record=True)
             for rows in (slice(0, 20), slice(20, 50))]
    whole = sequential_log_marginal(detector.network_, X, 40, 7, detector.thresholds_, None, record=True)
    joined = concatenate_records(parts)
    np.testing.assert_allclose(joined.full, whole.full, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(joined.rounds, whole.rounds, rtol=1e-5, atol=1e-4)
    assert joined.draws == whole.draws


def test_fit_calibration_folds_on_the_command_line(tmp_path, capsys):
    import pandas as pd

    from vaefilter.cli import main

    train = tmp_path / "train.csv"
    pd.DataFrame(_rows(90), columns=["a", "b", "c"]).to_csv(train, index=False)
    model = tmp_path / "m.vaefilter"
    common = ["fit", str(train), "-o", str(model), "--epochs", "3", "--hidden", "16", "--latent-dim", "2",
              "--proposal-steps", "5", "-q"]
    assert main(common + ["--calibration-folds", "3"]) == 0
    assert load_model(model).calibration_folds_ == 3 and len(load_model(model).validation_scores_) == 90
    capsys.readouterr()
    assert main(["info", "-m", str(model)]) == 0
    assert "of 90 calibration rows (out-of-fold scores of 3 cross-fitted networks)" in capsys.readouterr().out
    assert main(common + ["--calibration-folds", "1"]) == 2
    assert "argument --calibration-folds: must be a whole number >= 2, 'auto' or 'none', got '1'" in capsys.readouterr().err
