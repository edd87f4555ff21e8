"""Conformal p-values, false-rejection control, Benjamini-Hochberg and the held-out calibration split.

The validity tests simulate: exchangeable clean scores must give P(p <= alpha)
<= alpha (up to sampling error) for several alpha; BH at q must keep the mean
false discovery proportion <= q over many batches with planted outliers.
"""

from __future__ import annotations

import csv
import io
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from vaefilter import VAEOutlierDetector
from vaefilter.band import (
    benjamini_hochberg,
    conformal_band,
    conformal_pvalues,
    describe_band,
    edge_rejection_intervals,
)
from vaefilter.persistence import load_model, save_model
from vaefilter.pipeline import FDR_FIELDS, REJECT_FIELDS, filter_csv, filter_csv_fdr, score_csv

ALPHAS = (0.02, 0.05, 0.07, 0.1, 0.3)


def _one_test_point_each(n_cal, n_draws, tail, seed=0):
    """p-values of one fresh clean score per fresh calibration set (exchangeable draws)."""
    rng = np.random.default_rng(seed)
    draws = rng.normal(size=(n_draws, n_cal + 1))
    return np.array([conformal_pvalues(d[-1:], d[:-1], tail)[0] for d in draws])


@pytest.mark.parametrize("tail", ["lower", "upper", "two-sided"])
def test_pvalues_are_valid_in_finite_samples(tail):
    # n = 19: every off-by-one in the rank (n vs n+1, < vs <=) moves P(p <= alpha) by 1/20
    n_cal, n_draws = 19, 20000
    p = _one_test_point_each(n_cal, n_draws, tail)
    for alpha in ALPHAS:
        share = np.mean(p <= alpha)
        if tail == "two-sided":
            exact = 2 * np.floor(alpha / 2 * (n_cal + 1)) / (n_cal + 1)
        else:
            exact = np.floor(alpha * (n_cal + 1)) / (n_cal + 1)
        tolerance = 4 * np.sqrt(max(exact, 1 / n_draws) * (1 - exact) / n_draws)
        assert share <= alpha + tolerance, (alpha, share)
        assert abs(share - exact) <= tolerance, (alpha, share, exact)


def test_pvalue_formula_and_ties():
    cal = np.array([1.0, 2.0, 2.0, 3.0])
    assert conformal_pvalues([2.0], cal, "lower")[0] == pytest.approx(4 / 5)  # 1 + #{<= 2} = 4
    assert conformal_pvalues([2.0], cal, "upper")[0] == pytest.approx(4 / 5)  # 1 + #{>= 2} = 4
    assert conformal_pvalues([0.0], cal, "lower")[0] == pytest.approx(1 / 5)
    assert conformal_pvalues([0.0], cal, "two-sided")[0] == pytest.approx(2 / 5)
    assert conformal_pvalues([2.5], cal, "two-sided")[0] == pytest.approx(min(1, 2 * min(4 / 5, 2 / 5)))
    assert np.isnan(conformal_pvalues([np.nan], cal)[0])


@pytest.mark.parametrize("sides", [(True, False), (False, True), (True, True)])
def test_conformal_band_rejects_exactly_the_rows_with_small_pvalues(sides):
    rng = np.random.default_rng(1)
    cal, new = rng.normal(size=199), rng.normal(size=5000)
    tail = {(True, False): "lower", (False, True): "upper", (True, True): "two-sided"}[sides]
    for alpha in (0.01, 0.05, 0.1, 0.25):
        lower, upper = conformal_band(cal, alpha, sides)
        outside = np.zeros(new.size, dtype=bool)
        if lower is not None:
            outside |= new < lower
        if upper is not None:
            outside |= new > upper
        np.testing.assert_array_equal(outside, conformal_pvalues(new, cal, tail) <= alpha)


def test_conformal_band_rate_over_calibration_draws():
    # one-sided at alpha = 0.05 on n = 39 rows: k = 2, P(reject) = 2/40 exactly
    rng = np.random.default_rng(2)
    rejected = []
    for _ in range(4000):
        cal, new = rng.normal(size=39), rng.normal(size=25)
        lower, _ = conformal_band(cal, 0.05, (True, False))
        rejected.append(np.mean(new < lower))
    assert np.mean(rejected) == pytest.approx(0.05, abs=0.004)


def test_false_rejection_finer_than_the_calibration_set_warns():
    cal = np.random.default_rng(3).normal(size=50)
    with pytest.warns(UserWarning, match=r"finer than 50 calibration rows.*at least 99 calibration rows"):
        lower, _ = conformal_band(cal, 0.01, (True, False))
    assert lower == cal.min()
    with pytest.warns(UserWarning, match="per side"):
        conformal_band(cal, 0.03, (True, True))  # 1.5% per side < 1/51
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conformal_band(cal, 0.02, (True, False))  # 0.02 >= 1/51: resolvable, no warning
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        conformal_band(cal, 0.0)


def test_edge_interval_is_the_beta_law_of_the_order_statistic():
    rng = np.random.default_rng(4)
    n, k = 100, 5
    covered = []
    for _ in range(3000):
        cal = rng.normal(size=n)
        lower = np.sort(cal)[k - 1]
        (low, high), upper = edge_rejection_intervals(cal, (lower, None))
        assert upper is None
        covered.append(low <= stats.norm.cdf(lower) <= high)
    assert np.mean(covered) == pytest.approx(0.95, abs=0.015)
    cal = rng.normal(size=n)
    lower = np.sort(cal)[k - 1]
    (low, high), _ = edge_rejection_intervals(cal, (lower, None))
    assert (low, high) == pytest.approx(stats.beta.ppf([0.025, 0.975], k, n + 1 - k))
    # the upper edge from the top, and an edge between two scores is bracketed by both
    _, (ulow, uhigh) = edge_rejection_intervals(cal, (None, np.sort(cal)[-3]))
    assert (ulow, uhigh) == pytest.approx(stats.beta.ppf([0.025, 0.975], 3, n - 2))
    between = (np.sort(cal)[3] + np.sort(cal)[4]) / 2
    (blow, bhigh), _ = edge_rejection_intervals(cal, (between, None))
    assert blow == pytest.approx(stats.beta.ppf(0.025, 4, n - 3))
    assert bhigh == pytest.approx(stats.beta.ppf(0.975, 5, n - 4))
    text = describe_band(cal, (lower, None), (5, None))
    assert text[0] == f"percentiles (5, none) of {n} calibration rows"
    assert text[1].startswith(f"the lower edge rejects {100 * low:.2g}%-{100 * high:.2g}% of valid rows (95%")


def test_benjamini_hochberg_controls_the_false_discovery_rate():
    rng = np.random.default_rng(5)
    q, n_cal, m, n_out = 0.1, 200, 200, 20
    fdp, n_found = [], []
    for _ in range(400):
        cal = rng.normal(size=n_cal)
        scores = np.concatenate([rng.normal(size=m - n_out), rng.normal(-3.5, 1.0, size=n_out)])
        is_outlier = np.arange(m) >= m - n_out
        p = conformal_pvalues(scores, cal, "lower")
        cut = benjamini_hochberg(p, q)
        rejected = p <= cut
        fdp.append((rejected & ~is_outlier).sum() / max(1, rejected.sum()))
        n_found.append((rejected & is_outlier).sum())
    # BH on conformal p-values: FDR <= q m0 / m = 0.09; the standard error of the mean here is ~0.006
    assert np.mean(fdp) <= q + 0.015
    assert np.mean(n_found) > 5  # and it finds outliers
    assert benjamini_hochberg([0.5, 0.9, np.nan], q) == 0.0


def test_benjamini_hochberg_cut_is_the_step_up_rule():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, np.nan])
    # m = 8 scored: p_(k) <= k 0.05 / 8 holds last at k = 2 (0.008 <= 0.0125; 0.039 > 0.01875)
    assert benjamini_hochberg(p, 0.05) == 0.008


# --------------------------------------------------------------- estimator
def _generator(n, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 1))
    return np.hstack([z, 0.5 * z + 0.5 * rng.normal(size=(n, 1)), rng.normal(size=(n, 1))])


@pytest.fixture(scope="module")
def small_detector():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VAEOutlierDetector(latent_dim=2, hidden_layer_sizes=(16,), max_epochs=30, proposal_steps=10,
                                  n_importance_samples=20, threshold_percentiles=(5, None), random_state=0,
                                  device="cpu").fit(_generator(1000, 0))


def test_split_holds_calibration_rows_out_of_the_fit(small_detector):
    det = small_detector
    assert len(det.validation_scores_) == 200  # calibration_fraction=0.2 of 1000
    rng = np.random.RandomState(0)
    train, val, cal = det._split_rows(1000, rng)
    assert (len(train), len(val), len(cal)) == (700, 100, 200)
    assert not set(cal) & (set(train) | set(val)) and not set(train) & set(val)
    old = VAEOutlierDetector(validation_fraction=0.2, calibration_fraction=0)._split_rows(1000, rng)
    assert (len(old[0]), len(old[1]), len(old[2])) == (800, 200, 0)


@pytest.mark.parametrize("n, sizes", [(2, (1, 0, 1)), (3, (1, 1, 1)), (5, (3, 1, 1)), (10, (7, 1, 2))])
def test_tiny_inputs_keep_a_training_row_then_a_calibration_row(n, sizes):
    det = VAEOutlierDetector(latent_dim=1, hidden_layer_sizes=(4,), max_epochs=2, proposal_steps=1,
                             n_importance_samples=2, random_state=0, device="cpu")
    train, val, cal = det._split_rows(n, np.random.RandomState(0))
    assert (len(train), len(val), len(cal)) == sizes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det.fit(_generator(n, 1))
    assert len(det.validation_scores_) == sizes[2]
    assert (len(det.validation_loss_curve_) > 0) == (sizes[1] > 0)


def test_fractions_leaving_no_training_row_are_refused():
    with pytest.raises(ValueError, match="validation_fraction \\+ calibration_fraction must be below 1"):
        VAEOutlierDetector(validation_fraction=0.5, calibration_fraction=0.5, max_epochs=1).fit(_generator(20, 0))


def test_pvalues_on_fresh_rows_of_the_generator(small_detector):
    det = small_detector
    fresh = _generator(3000, 99)
    p = det.pvalues(fresh)
    n = len(det.validation_scores_)
    for alpha in (0.05, 0.1, 0.2):
        # one calibration set: the rate is F(k-th order statistic) ~ Beta(k, n+1-k), plus binomial noise
        k = int(np.floor(alpha * (n + 1)))
        high = stats.beta.ppf(0.999, k, n + 1 - k) + 3 * np.sqrt(alpha / len(fresh))
        low = stats.beta.ppf(0.001, k, n + 1 - k) - 3 * np.sqrt(alpha / len(fresh))
        assert low <= np.mean(p <= alpha) <= high, alpha
    # outliers get the smallest p-value there is
    assert np.all(det.pvalues(np.full((3, 3), 8.0)) == pytest.approx(1 / (n + 1)))


def test_calibrate_for_a_false_rejection_rate_agrees_with_pvalues(small_detector):
    det = small_detector
    fresh = _generator(500, 7)
    saved = det.thresholds_
    try:
        det.calibrate(false_rejection=0.1)
        assert det.false_rejection_ == 0.1
        assert det.thresholds_[1] is None  # the sides of threshold_percentiles (5, None)
        np.testing.assert_array_equal(det.predict(fresh) == -1, det.pvalues(fresh) <= 0.1)
        assert det.thresholds_[0] == np.sort(det.validation_scores_)[int(0.1 * 201) - 1]
        with pytest.warns(UserWarning, match="finer than 200 calibration rows"):
            det.calibrate(false_rejection=0.002)
        with pytest.raises(ValueError, match="false_rejection"):
            det.calibrate(false_rejection=1.5)
        det.calibrate()  # back to the percentiles, on the same calibration scores
        assert det.false_rejection_ is None
        assert det.thresholds_[0] == pytest.approx(np.percentile(det.validation_scores_, 5))
    finally:
        det.thresholds_, det.false_rejection_ = saved, None


def test_explain_has_the_pvalue_and_the_model_file_keeps_what_pvalues_need(small_detector, tmp_path):
    det = small_detector
    rows = _generator(20, 8)
    assert np.allclose(det.explain(rows)["p_value"], det.pvalues(rows))
    det.calibrate(false_rejection=0.05)
    path = tmp_path / "m.vf"
    save_model(det, path)
    loaded = load_model(path)
    assert loaded.false_rejection_ == 0.05 and loaded.calibration_fraction == 0.2
    np.testing.assert_array_equal(loaded.validation_scores_, det.validation_scores_)
    np.testing.assert_allclose(loaded.pvalues(rows), det.pvalues(rows))
    det.calibrate()


def test_old_model_files_calibrated_on_the_early_stopping_rows():
    old = load_model("tests/data/titanic_before_value_kinds.vf")
    assert old.calibration_fraction == 0.0 and old.false_rejection_ is None


# --------------------------------------------------------------- pipeline
def _csv_bytes(X, extra_rows=()):
    lines = ["a,b,c"] + [",".join(f"{v:.6f}" for v in row) for row in X] + list(extra_rows)
    return ("\n".join(lines) + "\n").encode()


def _rows(data):
    return list(csv.reader(io.StringIO(data.decode())))


@pytest.fixture(scope="module")
def frame_detector():
    X = pd.DataFrame(_generator(600, 10), columns=["a", "b", "c"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VAEOutlierDetector(latent_dim=2, hidden_layer_sizes=(16,), max_epochs=20, proposal_steps=5,
                                  n_importance_samples=10, threshold_percentiles=(1, None), random_state=0,
                                  device="cpu").fit(X)


def test_score_writes_the_pvalue(frame_detector, tmp_path):
    data = _csv_bytes(_generator(30, 11), ["1,2"])
    src = tmp_path / "in.csv"
    src.write_bytes(data)
    score_csv(frame_detector, src, tmp_path / "out.csv")
    rows = _rows((tmp_path / "out.csv").read_bytes())
    assert rows[0][-4:] == ["log_px", "is_valid", "reason", "p_value"]
    p = [float(r[-1]) for r in rows[1:-1]]
    expected = frame_detector.pvalues(pd.read_csv(io.BytesIO(_csv_bytes(_generator(30, 11)))))  # the cells as written
    np.testing.assert_allclose(p, expected, rtol=1e-5)
    assert rows[-1][-1] == ""  # unparseable row: no p-value


def _planted(n_good, n_bad, seed):
    X = _generator(n_good + n_bad, seed)
    X[n_good:] += 6.0
    return X


@pytest.mark.parametrize("via_stream", [False, True])
def test_filter_fdr_routes_every_row_once_byte_for_byte(frame_detector, tmp_path, via_stream):
    # 30 of 230: BH's 30th step, 30 q / m = 0.013, lies above the smallest p-value 1/121
    X = _planted(200, 30, 12)
    data = _csv_bytes(X, ["word,1,1", "1,2"])
    src = tmp_path / "in.csv"
    src.write_bytes(data)
    source = io.BytesIO(data) if via_stream else src
    summary = filter_csv(frame_detector, source, tmp_path / "v.csv", tmp_path / "i.csv", fdr=0.1)
    valid = (tmp_path / "v.csv").read_bytes().splitlines(keepends=True)
    invalid = _rows((tmp_path / "i.csv").read_bytes())
    assert invalid[0][-len(REJECT_FIELDS + FDR_FIELDS):] == REJECT_FIELDS + FDR_FIELDS
    records = data.splitlines(keepends=True)
    assert valid[0] == records[0]
    # every record once: valid ones byte for byte, rejected ones as their first fields
    assert summary.n_rows == 232 and summary.n_valid + summary.n_rejected == 232
    assert len(valid) - 1 == summary.n_valid and len(invalid) - 1 == summary.n_rejected
    assert sorted(valid[1:] + [r for r in records[1:] if r not in valid]) == sorted(records[1:])
    p_all = frame_detector.pvalues(pd.read_csv(io.BytesIO(_csv_bytes(X))))
    cut = benjamini_hochberg(p_all, 0.1)
    assert cut > 0
    expected_rejected = int((p_all <= cut).sum()) + 2  # plus the two unscorable rows
    assert summary.n_rejected == expected_rejected and summary.n_unscored == 2
    # appended: log_px, band_lower, band_upper, reason, p_value, n_draws, bh_cut
    scored = [r for r in invalid[1:] if r[-3]]
    assert all(float(r[-3]) <= cut * (1 + 1e-5) and float(r[-1]) == pytest.approx(cut, rel=1e-5) for r in scored)
    assert all(r[-4].startswith("p-value") for r in scored)
    # BH needs every p-value at K draws
    assert all(int(r[-2]) == frame_detector.n_importance_samples for r in scored)
    # the BH band's edge is where the p-values cut
    assert all(float(r[-7]) < float(r[-6]) for r in scored)


def test_filter_fdr_on_a_clean_batch_rejects_nothing_and_refuses_a_bad_level(frame_detector, tmp_path):
    # 200 clean rows, n = 120 calibration rows: the smallest p-value, 1/121, is above BH's first
    # step q/m = 0.0005, so BH rejects none, where the (1, None) band rejects some
    src = tmp_path / "in.csv"
    src.write_bytes(_csv_bytes(_generator(200, 13)))
    plain = filter_csv(frame_detector, src, tmp_path / "v1.csv", tmp_path / "i1.csv")
    bh = filter_csv(frame_detector, src, tmp_path / "v2.csv", tmp_path / "i2.csv", fdr=0.1)
    assert plain.n_rejected > 0
    assert bh.n_rejected == 0 and (tmp_path / "v2.csv").read_bytes() == src.read_bytes()
    with pytest.raises(ValueError, match="fdr"):
        filter_csv_fdr(frame_detector, src, tmp_path / "v3.csv", tmp_path / "i3.csv", 0.0)


# --------------------------------------------------------------------- CLI
def test_cli_fit_false_rejection_info_and_filter_fdr(tmp_path, capsys):
    from vaefilter.cli import main

    train = tmp_path / "train.csv"
    train.write_bytes(_csv_bytes(_generator(500, 20)))
    model = tmp_path / "m.vf"
    assert main(["fit", str(train), "-o", str(model), "--epochs", "5", "--hidden", "8", "--latent-dim", "2",
                 "--importance-samples", "8", "--proposal-steps", "5", "--percentiles", "1", "none",
                 "--false-rejection", "0.05", "-q"]) == 0
    det = load_model(model)
    assert det.false_rejection_ == 0.05 and len(det.validation_scores_) == 100
    assert det.thresholds_[0] == np.sort(det.validation_scores_)[int(0.05 * 101) - 1]
    capsys.readouterr()
    assert main(["info", "-m", str(model)]) == 0
    out = capsys.readouterr().out
    assert "set for a false-rejection rate of 0.05 (conformal rank threshold) of 100 calibration rows" in out
    assert "the lower edge rejects" in out and "of valid rows (95%" in out
    batch = tmp_path / "batch.csv"
    batch.write_bytes(_csv_bytes(_planted(100, 40, 21)))
    assert main(["filter", str(batch), "-m", str(model), "--valid", str(tmp_path / "v.csv"),
                 "--invalid", str(tmp_path / "i.csv"), "--fdr", "0.1", "-q"]) == 0
    header = _rows((tmp_path / "i.csv").read_bytes())[0]
    assert header[-3:] == ["p_value", "n_draws", "bh_cut"]
    assert main(["filter", str(batch), "-m", str(model), "--valid", str(tmp_path / "v2.csv"),
                 "--invalid", str(tmp_path / "i2.csv"), "--fdr", "1.5", "-q"]) == 2


def test_many_files_run_bh_per_file_and_parquet_refuses_fdr(frame_detector, tmp_path):
    pytest.importorskip("dask")
    from vaefilter.dask import filter_files

    model = tmp_path / "m.vf"
    save_model(frame_detector, model)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "clean.csv").write_bytes(_csv_bytes(_generator(100, 30)))
    (tmp_path / "in" / "dirty.csv").write_bytes(_csv_bytes(_planted(100, 40, 31)))
    results = filter_files(str(model), str(tmp_path / "in" / "*.csv"), str(tmp_path / "out" / "valid-*.csv"),
                           str(tmp_path / "out" / "invalid-*.csv"), scheduler="synchronous", fdr=0.1)
    by_name = {r["input"].rsplit("/", 1)[-1]: r for r in results}
    assert by_name["clean.csv"]["n_invalid"] == 0  # its own BH: the dirty file's outliers do not lower its cut
    assert by_name["dirty.csv"]["n_invalid"] >= 35
    assert _rows((tmp_path / "out" / "invalid-dirty.csv").read_bytes())[0][-1] == "bh_cut"
    with pytest.raises(ValueError, match="--fdr is for CSV inputs"):
        filter_files(str(model), [str(tmp_path / "x.parquet")], str(tmp_path / "v"), str(tmp_path / "i"), fdr=0.1)


def test_report_shows_the_band_uncertainty(small_detector):
    from vaefilter.report import build_report

    page = build_report(small_detector)
    assert "percentiles (5, none) of 200 calibration rows" in page
    assert "the lower edge rejects" in page and "of valid rows (95%" in page
