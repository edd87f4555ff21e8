"""Hostile input to the estimator and the CLI: each case used to crash, mislead or pass silently.

One small mixed-type model (a Gaussian column, a whole-number column and a
category) and one numeric-only model are fitted per module.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from vaefilter import VAEOutlierDetector
from vaefilter.cli import main
from vaefilter.datasets import titanic_csv_path
from vaefilter.explanations import format_nats, parse_reason
from vaefilter.model.likelihoods import RESIDUAL_LIMIT
from vaefilter.persistence import save_model

FAST = dict(latent_dim=2, hidden_layer_sizes=(16,), max_epochs=8, n_importance_samples=16, proposal_steps=5,
            random_state=0)


def _table(n, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(size=n), "b": 3 * rng.normal(size=n) + 1, "c": rng.integers(0, 5, n),
                         "k": rng.choice(["x", "y", "z"], n)})


@pytest.fixture(scope="module")
def mixed():
    return VAEOutlierDetector(**FAST).fit(_table(300))


@pytest.fixture(scope="module")
def numeric():
    return VAEOutlierDetector(**FAST).fit(np.random.default_rng(0).normal(size=(300, 3)))


# ------------------------------------------------------------ values past float32's square root
def test_a_value_far_out_in_a_gaussian_column_scores_finite_and_is_rejected(mixed):
    batch = _table(4, seed=1)
    batch.loc[1, "a"], batch.loc[2, "b"] = 1e20, -1e25
    log_px = mixed.score_samples(batch)  # each used to be -inf, and the whole batch raised
    assert np.isfinite(log_px).all()
    assert log_px[1] < -1e20 and log_px[2] < -1e20 and log_px[[0, 3]].min() > -1e3
    assert list(mixed.predict(batch)[[1, 2]]) == [-1, -1]
    assert np.isfinite(mixed.effective_sample_size(batch)).all()
    reasons = mixed.explain(batch)["reason"]
    assert reasons[1].startswith("log p(x)=-") and "a=1e+20 (" in reasons[1] and "e+" in reasons[1].split("a=1e+20")[1]
    assert len(reasons[1]) < 200  # 29-digit numbers were written out in full
    parsed = parse_reason(reasons[1], ["a", "b", "c", "k"])
    assert parsed.columns[0].column == "a" and parsed.columns[0].deficit > 1e20


def test_values_past_the_residual_limit_rank_below_every_nearer_one(mixed):
    batch = pd.concat([_table(1, seed=2)] * 4, ignore_index=True)
    batch["a"] = [1e3, 1e8, 1e14, 1e30]
    log_px = mixed.score_samples(batch)
    assert np.all(np.diff(log_px) < 0)
    assert RESIDUAL_LIMIT ** 2 < np.finfo(np.float32).max / 1e5  # finite for any column count below 1e5


def test_format_nats_switches_to_significant_digits_past_a_million():
    assert format_nats(-12.345) == "-12.3"
    assert format_nats(-5.573025e28) == "-5.573e+28"


# ------------------------------------------------------------ numeric models name the cell
@pytest.mark.parametrize("value, message", [
    (np.nan, r"X contains NaN \(a missing value\) at row 2, column 'x1'"),
    (-np.inf, r"X contains infinity \(-inf\) at row 2, column 'x1'"),
    ("abc", r"could not convert string to float: 'abc'; the first value that is not a real number is at row 2, "
            r"column 'x1': 'abc'"),
])
def test_a_numeric_model_names_the_row_and_column_of_a_bad_cell(numeric, value, message):
    X = np.zeros((4, 3), dtype=object)
    X[2, 1] = value
    with pytest.raises(ValueError, match=message):  # were scikit-learn's 'Input X contains NaN.'
        numeric.score_samples(X)


def test_fit_names_the_cell_too():
    X = np.random.default_rng(0).normal(size=(50, 3))
    X[7, 2] = np.inf
    with pytest.raises(ValueError, match=r"infinity \(inf\) at row 7, column 'x2'"):
        VAEOutlierDetector(**FAST).fit(X)


# ------------------------------------------------------------ drift_report's log_px
@pytest.mark.parametrize("log_px, message", [
    (np.full(10, np.nan), "not finite at 10 position"),  # read as 'no drift'
    (np.zeros(3), "fewer than the 10 rows"),
    (np.zeros((10, 2)), "1-D array"),
    (np.array(["a"] * 10), "1-D array of real scores"),
])
def test_drift_report_checks_the_scores_it_is_given(mixed, log_px, message):
    with pytest.raises(ValueError, match=message):
        mixed.drift_report(_table(10, seed=3), log_px=log_px)


def test_drift_report_takes_scores_of_a_larger_batch(mixed):
    batch = _table(40, seed=4)
    report = mixed.drift_report(batch.iloc[:10], log_px=mixed.score_samples(batch))
    assert report.n_rows == 40


# ------------------------------------------------------------ generating
@pytest.mark.parametrize("Z, message", [
    (np.zeros((2, 3)), "Z has 3 columns, but .* latent_dim=2"),  # reshaped into 3 points
    (np.zeros(4), "Z has 4 columns, but .* latent_dim=2"),  # a flat array is one point
    ([[np.nan, 0.0]], "Z contains NaN"),
])
def test_decode_checks_its_points(numeric, Z, message):
    with pytest.raises(ValueError, match=message):
        numeric.decode(Z)


def test_decode_takes_one_point_as_a_vector(numeric):
    assert np.allclose(numeric.decode([0.5, -0.5]), numeric.decode([[0.5, -0.5]]))


@pytest.mark.parametrize("n, error", [(-1, ValueError), (0, ValueError), (2.7, TypeError), (True, TypeError)])
def test_sample_checks_its_count(numeric, n, error):
    with pytest.raises(error, match="n_samples"):
        numeric.sample(n)


def test_sample_takes_a_numpy_integer(numeric):
    assert numeric.sample(np.int64(3), random_state=0).shape == (3, 3)


# ------------------------------------------------------------ fitting
def test_an_all_missing_category_column_is_refused_by_name():
    with pytest.raises(ValueError, match="categorical column 'z' is missing in every training row"):
        VAEOutlierDetector(**FAST, handle_missing="model").fit(_table(60).assign(z=[None] * 60))


def test_a_complex_column_is_refused():
    table = _table(60).assign(w=np.ones(60) + 1j)  # was fitted as a binary column of real parts
    with pytest.raises(ValueError, match="column 'w' has dtype complex128"):
        VAEOutlierDetector(**FAST).fit(table)


@pytest.mark.parametrize("kinds, message", [
    ({"k": "continuous"}, "column 'k' the numeric kind 'continuous', but that column is categorical"),
    ({"flag": "count"}, "column 'flag' the numeric kind 'count', but that column is boolean"),
])
def test_a_numeric_kind_for_a_categorical_or_boolean_column_is_refused(kinds, message):
    table = _table(60).assign(flag=np.arange(60) % 2 == 0)
    with pytest.raises(ValueError, match=message):  # was silently ignored
        VAEOutlierDetector(**FAST, column_kinds=kinds).fit(table)


def test_binary_kind_for_a_boolean_column_is_what_it_already_is():
    table = _table(60).assign(flag=np.arange(60) % 2 == 0)
    detector = VAEOutlierDetector(**FAST, column_kinds={"flag": "binary"}).fit(table)
    assert detector.schema_.columns[-1].kind == "binary"


def test_a_frame_without_columns_is_refused_as_scikit_learn_does():
    with pytest.raises(ValueError, match=r"0 feature\(s\)"):
        VAEOutlierDetector(**FAST).fit(pd.DataFrame(index=range(10)))


def test_saving_an_unfitted_detector_says_so(tmp_path):
    with pytest.raises(NotFittedError):
        save_model(VAEOutlierDetector(), tmp_path / "m.vf")
    assert not (tmp_path / "m.vf").exists()


@pytest.mark.parametrize("values", [pd.to_datetime(["2020-01-01", "2020-01-02"]), pd.to_timedelta([1, 2], unit="s")])
def test_dates_in_a_numeric_column_are_refused_at_scoring(mixed, values):
    batch = _table(2, seed=5).assign(a=values)  # scored as nanoseconds: log p(x) about -5e28
    with pytest.raises(ValueError, match="column 'a' has dtype .*64.*, but it held float64 values in training"):
        mixed.score_samples(batch)


# ------------------------------------------------------------ CLI
def test_report_to_standard_output(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the old bug wrote a file named '-' here
    pytest.importorskip("matplotlib")
    lines = titanic_csv_path().read_bytes().splitlines(keepends=True)
    train = tmp_path / "train.csv"
    train.write_bytes(b"".join(lines[:200]))
    model = tmp_path / "m.vf"
    assert main(["fit", str(train), "-o", str(model), "--epochs", "3", "--hidden", "8", "--latent-dim", "2", "-q"]) == 0
    capsys.readouterr()
    assert main(["report", str(train), "-m", str(model), "-o", "-"]) == 0
    captured = capsys.readouterr()
    assert captured.out.lstrip().lower().startswith("<!doctype html") and "</html>" in captured.out
    assert "standard output" in captured.err
    assert not (tmp_path / "-").exists()


# ------------------------------------------------------------ spreads float32 barely resolves
def _two_columns(a, n=1500, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": a(rng.normal(size=n)), "b": rng.normal(size=n)})


@pytest.mark.parametrize("unit, offset, kind", [(1e-7, 0.0, "continuous"), (1000.0, 1.7e9, "continuous")])
def test_a_small_spread_or_a_large_offset_is_still_checked(unit, offset, kind):
    # N(0, 1e-7) and epoch seconds 1.7e9 + N(0, 1000) were modelled as constants: 100 sd scored as typical
    detector = VAEOutlierDetector(**{**FAST, "max_epochs": 20}).fit(_two_columns(lambda z: offset + unit * z))
    assert detector.schema_.columns[0].value_kind == kind  # the log of 1.7e9 +- 1000 is what float32 cannot resolve
    batch = pd.DataFrame({"a": offset + unit * np.array([0.0, 20.0, -20.0]), "b": [0.0, 0.0, 0.0]})
    log_px = detector.score_samples(batch)
    assert log_px[0] - max(log_px[1:]) > 50
    assert list(detector.predict(batch)[1:]) == [-1, -1]


def test_a_spread_float32_cannot_resolve_is_named_at_fit():
    table = _two_columns(lambda z: 1.7e9 + 3.0 * z)  # steps of 128 around 1.7e9
    with pytest.warns(UserWarning, match="column 'a' varies .* by less than float32 resolves there"):
        VAEOutlierDetector(**FAST).fit(table)


def test_the_resolution_rule():
    from vaefilter._precision import float32_resolves
    assert float32_resolves(1.7e9, 1000.0) and not float32_resolves(1.7e9, 3.0)
    assert float32_resolves(0.0, 1e-7) and not float32_resolves(0.0, 0.0)


def test_a_reason_quotes_ten_digits_of_a_large_value():
    from vaefilter.explanations import ColumnProblem
    assert ColumnProblem("ts", "deficit", 111.7, 1700020000.0).render().startswith("ts=1700020000 (")


# ------------------------------------------------------------ fit from CSV
@pytest.fixture
def small_csv(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"".join(titanic_csv_path().read_bytes().splitlines(keepends=True)[:151]))
    return path


CLI_FAST = ["--epochs", "3", "--hidden", "8", "--latent-dim", "2", "--importance-samples", "8", "-q"]


def _fit(argv, capsys):
    code = main([str(a) for a in argv] + CLI_FAST)
    return code, capsys.readouterr().err


def test_fit_names_the_file_line_and_column_of_a_number_beyond_float32(small_csv, tmp_path, capsys):
    lines = small_csv.read_text().splitlines(keepends=True)
    fields = lines[40].split(",")
    fields[6] = "1e39"
    lines[40] = ",".join(fields)
    small_csv.write_text("".join(lines))
    code, err = _fit(["fit", small_csv, "-o", tmp_path / "m.vf"], capsys)
    assert code == 2 and f"{small_csv}: line 41: column 'fare': '1e39' is beyond float32" in err, err


def test_fit_refuses_an_empty_validation_file_before_training(small_csv, tmp_path, capsys, monkeypatch):
    empty = tmp_path / "v.csv"
    empty.write_bytes(small_csv.read_bytes().splitlines(keepends=True)[0])
    monkeypatch.setattr(VAEOutlierDetector, "fit", lambda *a, **k: pytest.fail("trained before checking"))
    code, err = _fit(["fit", small_csv, "--validation", empty, "-o", tmp_path / "m.vf"], capsys)
    assert code == 2 and "v.csv: no data rows to calibrate the band on" in err, err


def test_fit_refuses_excluding_every_column(small_csv, tmp_path, capsys):
    names = small_csv.read_text().splitlines()[0].split(",")
    code, err = _fit(["fit", small_csv, "--exclude", *names, "-o", tmp_path / "m.vf"], capsys)
    assert code == 2 and "--exclude names every column" in err, err


def test_fit_reads_a_file_named_twice_once(small_csv, tmp_path, capsys):
    other = str(small_csv.parent / "." / small_csv.name)
    assert main(["fit", str(small_csv), other, "-o", str(tmp_path / "m.vf"), *CLI_FAST[:-1]]) == 0
    assert "trained on 150 rows" in capsys.readouterr().err


# ------------------------------------------------------------ filter outputs
@pytest.fixture
def model_file(small_csv, tmp_path, capsys):
    code, err = _fit(["fit", small_csv, "-o", tmp_path / "m.vf"], capsys)
    assert code == 0, err
    return tmp_path / "m.vf"


def test_a_summary_json_in_a_missing_directory_is_refused_before_writing(small_csv, model_file, tmp_path, capsys):
    valid, invalid = tmp_path / "v.csv", tmp_path / "i.csv"
    valid.write_text("keep\n")
    invalid.write_text("keep\n")
    code = main(["filter", str(small_csv), "-m", str(model_file), "--valid", str(valid), "--invalid", str(invalid),
                 "-q", "--summary-json", str(tmp_path / "nodir" / "x.json")])
    assert code == 2 and "its directory" in capsys.readouterr().err
    assert valid.read_text() == "keep\n" and invalid.read_text() == "keep\n"


@pytest.mark.parametrize("valid", ["/dev/stdout", "OUT"])
def test_an_output_that_is_stdout_under_another_name_is_refused(small_csv, model_file, tmp_path, valid):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import vaefilter

    out = tmp_path / "out.csv"
    valid = str(out) if valid == "OUT" else valid  # '--valid out.csv --invalid - > out.csv'
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(vaefilter.__file__).parents[1])}
    with open(out, "wb") as stdout:
        done = subprocess.run([sys.executable, "-m", "vaefilter.cli", "filter", str(small_csv), "-m", str(model_file),
                               "--valid", valid, "--invalid", "-", "-q"], stdout=stdout, stderr=subprocess.PIPE,
                              env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert b"both name stdout" in done.stderr and out.read_bytes() == b""


def test_errors_of_one_file_among_many_carry_no_class_name():
    from vaefilter.pipeline import error_text
    assert error_text(FileNotFoundError(2, "No such file or directory", "a.csv")) == "a.csv: No such file or directory"
    assert error_text(ValueError("e.csv: line 1: bad")) == "e.csv: line 1: bad"
    assert error_text(RuntimeError("the input changed")) == "the input changed"
    assert error_text(KeyError("col")) == "KeyError: 'col'"
    assert error_text(MemoryError()) == "MemoryError: "


def test_bytes_in_a_category_column_match_their_text(mixed):
    batch = _table(3, seed=6)
    as_bytes = batch.assign(k=[v.encode() for v in batch["k"]])  # were 'a category never seen' (~27 nats)
    np.testing.assert_allclose(mixed.score_samples(as_bytes), mixed.score_samples(batch))


def test_a_capped_cell_keeps_the_float32_search_finite(monkeypatch):
    # on a GPU the posterior search runs in float32: residual^2 / variance^3 of a capped cell was
    # 1e39 and the search's Newton steps turned the row's score into NaN
    import vaefilter.scoring.marginal as marginal
    monkeypatch.setattr(marginal, "_in_search_precision", lambda network, *tensors: (network, *tensors))
    rng = np.random.default_rng(0)
    a = rng.normal(size=1000)
    table = pd.DataFrame({"a": a, "b": a + 0.001 * rng.normal(size=1000), "c": rng.normal(size=1000)})
    detector = VAEOutlierDetector(latent_dim=2, max_epochs=100, random_state=0).fit(table)  # NaN at row 2
    batch = table.iloc[:4].copy()
    batch.loc[1, "a"], batch.loc[2, "b"] = 1e20, 1e20
    log_px = detector.score_samples(batch)
    assert np.isfinite(log_px).all() and log_px[1] < -1e20 and log_px[2] < -1e20


def test_bytes_still_match_a_model_that_stored_their_repr():
    from vaefilter.columns import _category_codes
    assert list(_category_codes([b"x", b"y", b"z"], ["b'x'", "b'y'"])) == [0, 1, 2]  # 2: never seen


def test_a_non_number_is_named_by_the_frame_s_own_column(numeric):
    frame = pd.DataFrame({"x0": [0.0, 1.0], "x1": [0.0, 1.0], "zz": ["u", "v"]})
    with pytest.raises(ValueError, match="column 'zz': 'u'"):  # was named 'x2', the model's column there
        numeric.score_samples(frame)


def test_the_complex_cell_named_is_the_one_with_an_imaginary_part(numeric):
    X = np.zeros((3, 3), dtype=complex)
    X[2, 1] = 1j
    with pytest.raises(ValueError, match=r"(?s)Complex data not supported.*row 2, column 'x1'"):
        numeric.score_samples(X)


def test_dates_are_refused_by_a_numeric_model_too():
    frame = pd.DataFrame({"a": np.arange(60.0), "b": np.arange(60.0) % 7})
    detector = VAEOutlierDetector(**FAST).fit(frame)
    dates = pd.DataFrame({"a": pd.to_datetime(["2020-01-01"] * 2), "b": pd.to_datetime(["2020-01-02"] * 2)})
    with pytest.raises(ValueError, match="column 'a' has dtype datetime64"):  # scored as about -1.8e30
        detector.score_samples(dates)


def test_decode_takes_a_column_of_points_in_a_one_dimensional_latent_space():
    detector = VAEOutlierDetector(**{**FAST, "latent_dim": 1}).fit(np.random.default_rng(0).normal(size=(100, 2)))
    assert detector.decode(np.linspace(-2, 2, 5)).shape == (5, 2)


def test_fit_reads_a_hard_link_to_a_training_file_once(small_csv, tmp_path, capsys):
    import os
    link = tmp_path / "link.csv"
    os.link(small_csv, link)
    assert main(["fit", str(small_csv), str(link), "-o", str(tmp_path / "m.vf"), *CLI_FAST[:-1]]) == 0
    assert "trained on 150 rows" in capsys.readouterr().err


def test_stdout_shared_with_dev_null_or_an_input_is_not_a_clash(small_csv, model_file, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import vaefilter

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(vaefilter.__file__).parents[1])}
    base = [sys.executable, "-m", "vaefilter.cli"]
    with open(os.devnull, "wb") as null:  # an exit-status-only run: --valid /dev/null --invalid - > /dev/null
        done = subprocess.run([*base, "filter", str(small_csv), "-m", str(model_file), "--valid", os.devnull,
                               "--invalid", "-", "-q"], stdout=null, stderr=subprocess.PIPE, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    piped = subprocess.run([*base, "filter", str(small_csv), "-m", str(model_file), "--valid", "/dev/stdout",
                            "--invalid", "-", "-q"], capture_output=True, env=env, timeout=300)  # a pipe
    assert piped.returncode == 2 and b"both name stdout" in piped.stderr and piped.stdout == b""


def test_a_parquet_summary_beside_outputs_in_a_new_directory(small_csv, model_file, tmp_path):
    pytest.importorskip("dask.dataframe")
    pytest.importorskip("pyarrow")
    source = tmp_path / "b.parquet"
    pd.read_csv(small_csv).to_parquet(source)
    new = tmp_path / "out" / "new"  # filter_parquet creates it; the summary goes in it too
    assert main(["filter", str(source), "-m", str(model_file), "--valid", str(new / "valid"), "--invalid",
                 str(new / "invalid"), "--summary-json", str(new / "s.json"), "-q"]) == 0
    assert (new / "s.json").exists()
    assert main(["filter", str(source), "-m", str(model_file), "--valid", str(tmp_path / "o2" / "valid"),
                 "--invalid", str(tmp_path / "o2" / "invalid"), "--summary-json", str(tmp_path / "no" / "s.json"),
                 "-q"]) == 2
    assert not (tmp_path / "o2").exists()


def test_the_discrete_shift_does_not_round_with_the_rows_beside():
    # BLAS rounded the (rows x indicators) @ (indicators x targets) shift differently at 8 rows and
    # at 16 or more: a rejected row's log_px in explain(sequential=True), as the filter writes it,
    # moved by 1.9e-6 nats with the rows scored beside it
    import torch
    from vaefilter.model.relations import DiscreteParents

    rng = np.random.default_rng(0)
    parents = DiscreteParents.__new__(DiscreteParents)
    torch.nn.Module.__init__(parents)
    weight = torch.as_tensor(rng.normal(size=(11, 7)), dtype=torch.float32)
    parents.coefficients = lambda: weight
    parents.register_buffer("targets", torch.arange(11))
    residuals = torch.as_tensor(rng.normal(size=(199, 1, 7)), dtype=torch.float32)
    params = torch.zeros(199, 6, 11)
    together = parents.shifted(params, residuals)
    alone = torch.cat([parents.shifted(params[i : i + 1].expand(8, 6, 11), residuals[i : i + 1].expand(8, 1, 7))[:1]
                       for i in range(199)])
    assert torch.equal(together, alone)


def test_explain_sequential_does_not_depend_on_the_rows_beside():
    table = pd.read_csv(titanic_csv_path()).iloc[:600]
    detector = VAEOutlierDetector(**{**FAST, "handle_missing": "model", "max_epochs": 10}).fit(table)
    batch = pd.read_csv(titanic_csv_path()).iloc[600:700].reset_index(drop=True)
    together = detector.explain(batch, sequential=True)["log_px"].to_numpy()
    alone = np.concatenate([detector.explain(batch.iloc[[i]], sequential=True)["log_px"].to_numpy()
                            for i in range(len(batch))])
    np.testing.assert_array_equal(together, alone)


def test_stdout_redirected_onto_the_input_is_refused(small_csv, model_file, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import vaefilter

    before = small_csv.read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(vaefilter.__file__).parents[1])}
    with open(small_csv, "ab") as stdout:  # 'vaefilter score t.csv -o - >> t.csv'
        done = subprocess.run([sys.executable, "-m", "vaefilter.cli", "score", str(small_csv), "-m", str(model_file),
                               "-o", "-", "-q"], stdout=stdout, stderr=subprocess.PIPE, env=env, timeout=300)
    assert done.returncode == 2 and b"the input and --output both name stdout" in done.stderr, done.stderr
    assert small_csv.read_bytes() == before
    with open(small_csv, "rb") as stdin, open(tmp_path / "o.csv", "wb") as stdout:  # '- < t.csv > o.csv' is fine
        done = subprocess.run([sys.executable, "-m", "vaefilter.cli", "score", "/dev/stdin", "-m", str(model_file),
                               "-o", "-", "-q"], stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env=env,
                              timeout=300)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------ found by an adversarial run (2026-12-03)
def test_outputs_of_different_inputs_may_not_share_a_name(small_csv, model_file, tmp_path, capsys):
    # 'o-*.csv' and 'o-v*.csv': a.csv's rejected rows and va.csv's valid ones were both o-va.csv,
    # and the second replaced the first (rows lost, exit 0)
    a, va = tmp_path / "a.csv", tmp_path / "va.csv"
    a.write_bytes(small_csv.read_bytes())
    va.write_bytes(small_csv.read_bytes())
    code = main(["filter", str(a), str(va), "-m", str(model_file), "--valid", str(tmp_path / "o-*.csv"),
                 "--invalid", str(tmp_path / "o-v*.csv"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "o-va.csv" in err and "each output needs its own file" in err, err
    assert not list(tmp_path.glob("o-*"))


def test_an_output_onto_the_file_stdin_is_redirected_from_is_refused(small_csv, model_file, tmp_path, capsys,
                                                                      monkeypatch):
    # 'filter - --valid t.csv < t.csv' replaced t.csv with its own valid rows
    before = small_csv.read_bytes()
    with open(small_csv) as stdin:
        monkeypatch.setattr("sys.stdin", stdin)
        code = main(["filter", "-", "-m", str(model_file), "--valid", str(small_csv),
                     "--invalid", str(tmp_path / "r.csv"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "(standard input) and --valid both name" in err, err
    assert small_csv.read_bytes() == before and not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("stream", ["stdin", "stdout"])
def test_a_closed_standard_stream_is_named(small_csv, model_file, tmp_path, capsys, monkeypatch, stream):
    # '<&-' / '>&-': Python's sys.stdin/sys.stdout are None, and '-' raised an AttributeError traceback
    monkeypatch.setattr(f"sys.{stream}", None)
    source, valid = ("-", str(tmp_path / "v.csv")) if stream == "stdin" else (str(small_csv), "-")
    code = main(["filter", source, "-m", str(model_file), "--valid", valid, "--invalid", str(tmp_path / "r.csv"),
                 "-q"])
    err = capsys.readouterr().err
    assert code == 2 and f"standard {'input' if stream == 'stdin' else 'output'} is closed" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.vf", "t.csv"]


def test_a_full_disk_behind_stdout_names_standard_output(small_csv, model_file, tmp_path, capsys, monkeypatch):
    # was 'vaefilter: error: OSError: [Errno 28] No space left on device'
    import contextlib

    full = open("/dev/full", "w")
    monkeypatch.setattr("sys.stdout", full)
    code = main(["filter", str(small_csv), "-m", str(model_file), "--valid", "-",
                 "--invalid", str(tmp_path / "r.csv"), "-q"])
    monkeypatch.undo()
    with contextlib.suppress(OSError):  # what is left in its buffer cannot be written either
        full.close()
    err = capsys.readouterr().err
    assert code == 2 and "standard output: No space left on device" in err, err
    assert not (tmp_path / "r.csv").exists()


def test_sighup_is_left_ignored_under_nohup():
    import signal

    from vaefilter.cli import _sigterm_raises

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with _sigterm_raises():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        with _sigterm_raises():
            assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_ctrl_c_while_the_console_script_loads_is_quiet(monkeypatch, capsys):
    # an interrupt during torch's import printed a KeyboardInterrupt traceback (exit -2)
    import importlib.abc
    import sys

    from vaefilter.__main__ import main as console_main

    class Interrupted(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "vaefilter.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "vaefilter.cli", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupted(), *sys.meta_path])
    assert console_main(["--help"]) == 130
    assert capsys.readouterr().err == "vaefilter: interrupted while starting; nothing was written\n"


def test_the_console_script_loads_torch_inside_its_handler():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import sys, vaefilter.__main__; print('torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_an_encoding_without_a_replace_mode_is_refused_by_name():
    # '--encoding idna' passed the check, then failed on the first record with no file or line
    from vaefilter.io.csvio import check_encoding

    with pytest.raises(ValueError, match="encoding 'idna' is not a character set for files"):
        check_encoding("idna")
    assert check_encoding("shift_jis") == "shift_jis"


@pytest.mark.parametrize("fdr", [None, "0.2"])
def test_a_summary_json_that_cannot_be_written_leaves_the_outputs_as_they_were(small_csv, model_file, tmp_path,
                                                                                capsys, fdr):
    # '--summary-json /dev/full' exited 2 after both CSV outputs had been replaced
    valid, invalid = tmp_path / "v.csv", tmp_path / "i.csv"
    valid.write_text("keep\n")
    invalid.write_text("keep\n")
    code = main(["filter", str(small_csv), "-m", str(model_file), "--valid", str(valid), "--invalid", str(invalid),
                 "-q", "--summary-json", "/dev/full", *(["--fdr", fdr] if fdr else [])])
    err = capsys.readouterr().err
    assert code == 2 and "/dev/full: No space left on device" in err, err
    assert valid.read_text() == "keep\n" and invalid.read_text() == "keep\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.csv", "m.vf", "t.csv", "v.csv"]


@pytest.mark.parametrize("model", ["missing.vf", "broken.vf"])
def test_many_inputs_and_a_bad_model_fail_once_before_any_folder_is_made(small_csv, tmp_path, capsys, model):
    import shutil

    from vaefilter import cli

    second = tmp_path / "second.csv"
    shutil.copyfile(small_csv, second)
    (tmp_path / "broken.vf").write_bytes(b"not a model")
    code = cli.main(["filter", str(small_csv), str(second), "-m", str(tmp_path / model),
                     "--valid", str(tmp_path / "v" / "*.csv"), "--invalid", str(tmp_path / "i" / "*.csv"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count(model) == 1, err  # was once per file: '2 of 2 file(s) failed: ...'
    assert not (tmp_path / "v").exists() and not (tmp_path / "i").exists()
