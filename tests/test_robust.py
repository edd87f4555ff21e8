"""trim_fraction=: trimmed-likelihood training and a calibration set without its least likely rows.

Data: 5 correlated columns (2 latent factors plus noise), 600 training rows
of which 30 (5%) carry a gross fault (one cell moved by 6-10 standard
deviations of the noise-free column), and 400 clean test rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vaefilter import VAEOutlierDetector
from vaefilter.band import exclude_lowest, n_set_aside
from vaefilter.cli import main
from vaefilter.persistence import load_model, pack_model_file, save_model, unpack_model_file, ModelFileError
from vaefilter.model.training import TRIM_WARMUP_EPOCHS

import json

SMALL = dict(latent_dim=2, hidden_layer_sizes=(32,), max_epochs=40, n_importance_samples=16, proposal_steps=20,
             random_state=0, device="cpu")
N_ROWS, N_BAD = 600, 30


def _table(n, rng, W):
    return rng.normal(size=(n, 2)) @ W + 0.3 * rng.normal(size=(n, 5))


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    W = rng.normal(size=(2, 5))
    clean = _table(N_ROWS, rng, W)
    bad = np.sort(rng.choice(N_ROWS, N_BAD, replace=False))
    dirty = clean.copy()
    dirty[bad, rng.randint(5, size=N_BAD)] += rng.choice([-1, 1], N_BAD) * rng.uniform(6, 10, N_BAD)
    return clean, dirty, bad, _table(400, rng, W)


@pytest.fixture(scope="module")
def fits(data):
    clean, dirty, _, _ = data
    one_sided = dict(SMALL, threshold_percentiles=(5, None))
    return {
        "clean": VAEOutlierDetector(**one_sided).fit(clean),
        "dirty": VAEOutlierDetector(**one_sided).fit(dirty),
        "trimmed": VAEOutlierDetector(trim_fraction=0.05, **one_sided).fit(dirty),
    }


def test_none_and_zero_train_the_same_model(data):
    clean, dirty, _, test = data
    # equality needs no converged model: 10 epochs, past the trimming's warm-up, as 40 would be
    params = dict(SMALL, max_epochs=10)
    assert params["max_epochs"] > TRIM_WARMUP_EPOCHS
    none = VAEOutlierDetector(**params).fit(dirty)
    zero = VAEOutlierDetector(trim_fraction=0.0, **params).fit(dirty)
    assert none.loss_curve_ == zero.loss_curve_ and none.validation_loss_curve_ == zero.validation_loss_curve_
    assert none.thresholds_ == zero.thresholds_
    np.testing.assert_array_equal(none.score_samples(test), zero.score_samples(test))
    assert none.training_set_aside_.size == 0 and none.calibration_excluded_.size == 0
    assert len(none.validation_scores_) == int(np.ceil(0.2 * N_ROWS))


def test_set_aside_rows_are_the_planted_ones(fits, data):
    _, _, bad, _ = data
    det = fits["trimmed"]
    n_train = N_ROWS - int(np.ceil(0.1 * N_ROWS)) - int(np.ceil(0.2 * N_ROWS))  # early-stopping and calibration rows out
    aside = det.training_set_aside_
    assert len(aside) == n_set_aside(n_train, 0.05) == 21
    assert np.all(np.diff(aside) > 0) and aside.max() < N_ROWS
    planted_in_training = np.setdiff1d(bad, det.calibration_excluded_)
    # 21 set aside; about 21 of the 30 planted rows are training rows
    assert np.isin(aside, bad).mean() >= 0.8
    excluded = det.calibration_excluded_
    assert len(excluded) == n_set_aside(int(np.ceil(0.2 * N_ROWS)), 0.05) == 6
    assert np.isin(excluded, bad).all()
    assert len(planted_in_training) > 0


def test_trimming_keeps_the_planted_rows_from_shaping_the_model(fits, data):
    """Fails if the loop trains on every row: the clean test rows' mean log p(x) stays where the dirty fit's is."""
    _, _, _, test = data
    clean, dirty, trimmed = (fits[k].score(test) for k in ("clean", "dirty", "trimmed"))
    # the planted rows do cost the untrimmed model: measured -5.36 clean, -5.75 dirty, -5.41 trimmed
    # (trained on the 16-sample bound; on the ELBO the planted rows cost more: -5.33, -6.79, -5.47)
    assert dirty < clean - 0.3
    assert clean - trimmed < 0.6 * (clean - dirty)


def test_band_is_not_widened_by_the_planted_rows(fits):
    clean, dirty, trimmed = (fits[k].thresholds_[0] for k in ("clean", "dirty", "trimmed"))
    assert dirty < clean - 1.0  # 5% planted rows drag the 5th percentile down
    assert abs(trimmed - clean) < 0.3 * abs(dirty - clean)


def test_trimming_is_deterministic(data, fits):
    _, dirty, _, _ = data
    again = VAEOutlierDetector(trim_fraction=0.05, **dict(SMALL, threshold_percentiles=(5, None))).fit(dirty)
    np.testing.assert_array_equal(again.training_set_aside_, fits["trimmed"].training_set_aside_)
    assert again.loss_curve_ == fits["trimmed"].loss_curve_


def test_warm_up_trains_on_every_row_then_the_epoch_loss_drops(fits):
    """The training loss after the warm-up is a mean over the kept rows, below the warm-up's trend."""
    curve = fits["trimmed"].loss_curve_
    jump = curve[TRIM_WARMUP_EPOCHS - 1] - curve[TRIM_WARMUP_EPOCHS]
    earlier = curve[TRIM_WARMUP_EPOCHS - 2] - curve[TRIM_WARMUP_EPOCHS - 1]
    assert jump > 2 * earlier


def test_calibrate_excludes_the_requested_share(fits, data):
    _, dirty, _, test = data
    det = VAEOutlierDetector(trim_fraction=0.1, **SMALL).fit(dirty)
    calibration = np.vstack([test[:190], dirty[:10]])
    scores = det.score_samples(calibration)
    det.calibrate(calibration)
    assert len(det.calibration_excluded_) == 20
    # explain's per-column pass rounds differently from score_samples in the last float32 bit
    np.testing.assert_allclose(np.sort(det.validation_scores_), np.sort(np.delete(scores, det.calibration_excluded_)),
                               rtol=1e-5)
    assert scores[det.calibration_excluded_].max() <= det.validation_scores_.min() + 1e-4


def test_exclude_lowest():
    scores = np.array([3.0, -1.0, 2.0, -1.0, 5.0, 0.0, 1.0, 4.0, 6.0, 7.0])
    kept, excluded = exclude_lowest(scores, 0.25)
    np.testing.assert_array_equal(excluded, [1, 3])
    np.testing.assert_array_equal(kept, [0, 2, 4, 5, 6, 7, 8, 9])
    for fraction in (None, 0.0, 0.09):
        kept, excluded = exclude_lowest(scores, fraction)
        assert excluded.size == 0 and kept.size == 10
    assert n_set_aside(1, 0.49) == 0 and n_set_aside(100, 0.05) == 5 and n_set_aside(2, 0.49) == 0


def test_model_file_keeps_the_set_aside_rows(fits, data, tmp_path):
    _, _, _, test = data
    det = fits["trimmed"]
    path = tmp_path / "m.vf"
    save_model(det, path)
    loaded = load_model(path)
    assert loaded.trim_fraction == 0.05
    np.testing.assert_array_equal(loaded.training_set_aside_, det.training_set_aside_)
    np.testing.assert_array_equal(loaded.calibration_excluded_, det.calibration_excluded_)
    np.testing.assert_array_equal(loaded.score_samples(test), det.score_samples(test))
    # a file written before trim_fraction existed
    header, payload = unpack_model_file(path.read_bytes())
    header = json.loads(header)
    del header["params"]["trim_fraction"], header["fitted"]["training_set_aside_"], header["fitted"]["calibration_excluded_"]
    older = tmp_path / "older.vf"
    older.write_bytes(pack_model_file(header, payload))
    old = load_model(older)
    assert old.trim_fraction is None and old.training_set_aside_.size == 0 and old.calibration_excluded_.size == 0


def test_shipped_old_model_file_loads_without_trim_fraction():
    from pathlib import Path

    old = load_model(Path(__file__).parent / "data" / "titanic_before_value_kinds.vf")
    assert old.trim_fraction is None and old.training_set_aside_.size == 0


@pytest.mark.parametrize("field, value, message", [
    ("params.trim_fraction", 0.5, "params.trim_fraction"),
    ("params.trim_fraction", "0.1", "params.trim_fraction"),
    ("fitted.training_set_aside_", [-1], "fitted.training_set_aside_"),
    ("fitted.calibration_excluded_", [1.5], "fitted.calibration_excluded_"),
])
def test_forged_trim_fraction_fields_are_refused(fits, tmp_path, field, value, message):
    path = tmp_path / "m.vf"
    save_model(fits["trimmed"], path)
    header, payload = unpack_model_file(path.read_bytes())
    header = json.loads(header)
    part, name = field.split(".")
    header[part][name] = value
    path.write_bytes(pack_model_file(header, payload))
    with pytest.raises(ModelFileError, match=message):
        load_model(path)


def test_report_names_the_set_aside_rows(fits):
    pytest.importorskip("matplotlib")
    from vaefilter.report import build_report

    det = fits["trimmed"]
    html = build_report(det)
    assert "training rows set aside (trim_fraction)" in html
    assert ", ".join(str(i) for i in det.training_set_aside_[:5]) in html
    assert "set aside (trim_fraction)" not in build_report(fits["dirty"])


def test_cli_fit_trim_fraction_and_info(data, tmp_path, capsys):
    _, dirty, bad, _ = data
    train = tmp_path / "train.csv"
    pd.DataFrame(dirty, columns=list("abcde")).to_csv(train, index=False)
    model = tmp_path / "m.vf"
    args = ["fit", str(train), "-o", str(model), "--epochs", "40", "--hidden", "32", "--latent-dim", "2",
            "--importance-samples", "16", "--proposal-steps", "20", "-q"]
    assert main(args + ["--trim-fraction", "0.05"]) == 0
    err = capsys.readouterr().err
    assert "21 training row(s) set aside" in err and "6 calibration row(s) excluded" in err
    # the set-aside rows are named by file and line (line 1 is the header)
    first = load_model(model).training_set_aside_[0]
    assert f"{train} line {first + 2}" in err
    assert main(["info", "-m", str(model)]) == 0
    out = capsys.readouterr().out
    assert "trim_fraction: 0.05: 21 training row(s) set aside" in out
    assert main(args + ["--trim-fraction", "0.5"]) == 2
    assert "--trim-fraction must be a number in [0, 0.5)" in capsys.readouterr().err
    assert main(args) == 0
    assert "set aside" not in capsys.readouterr().err
    assert main(["info", "-m", str(model)]) == 0
    assert "trim_fraction:" not in capsys.readouterr().out


def test_trim_fraction_is_validated():
    with pytest.raises(ValueError, match="trim_fraction"):
        VAEOutlierDetector(trim_fraction=0.5).fit(np.zeros((10, 2)))


def test_early_stopping_watches_the_trimmed_validation_loss(fits):
    """The planted validation rows (6 of 120, tens of nats each) are out of the monitored mean."""
    clean, dirty, trimmed = (fits[k].validation_loss_curve_[-1] for k in ("clean", "dirty", "trimmed"))
    # measured 5.31 clean, 6.00 dirty, 5.11 trimmed (5.55, 7.23 and 5.40 on the ELBO)
    assert dirty > clean + 0.5
    assert trimmed - clean < 0.5 * (dirty - clean)
