"""vaefilter.dask: scores of dask DataFrames, many-file filtering, a worker dying mid-file, Parquet."""

import functools
import os

import numpy as np
import pandas as pd
import pytest
import torch

distributed = pytest.importorskip("distributed")
dd = pytest.importorskip("dask.dataframe")

from vaefilter import cli, pipeline  # noqa: E402
from vaefilter.io.csvio import CsvReader  # noqa: E402
from vaefilter.dask import (  # noqa: E402
    FilterFilesError,
    expand_inputs,
    explain_dataframe,
    filter_file,
    filter_files,
    output_path,
    score_dataframe,
)
from vaefilter._torch import resolve_device  # noqa: E402
from vaefilter.persistence import load_model, model_bytes  # noqa: E402

# 20 proposal refit steps, not 200: every test here compares paths on one model, none its quality
TINY = ["--latent-dim", "2", "--hidden", "16", "--epochs", "10", "--importance-samples", "16", "--proposal-steps", "20",
        "-q"]


def _table(n, seed):
    rng = np.random.RandomState(seed)
    x = rng.normal(size=(n, 2))
    return pd.DataFrame({
        "x0": x[:, 0].round(4),
        "x1": (x[:, 0] + 0.3 * x[:, 1]).round(4),
        "colour": rng.choice(["red", "green", "dark, grey"], size=n),
    })


def _write_csv(path, n, seed, bad=True):
    """A CSV with quoted fields, CRLF line ends and (optionally) unparseable records."""
    text = _table(n, seed).to_csv(index=False, lineterminator="\r\n")
    if bad:
        lines = text.split("\r\n")
        lines.insert(3, "abc,1.0,red")  # not a number
        lines.insert(7, "1.0,2.0")  # a field short
        lines.insert(9, "40.0,-40.0,blue")  # far out and an unseen category
        text = "\r\n".join(lines)
    path.write_bytes(text.encode())
    return path


def _records(path):
    with CsvReader(str(path)) as reader:
        header = reader.header
        records = [r for chunk in reader for r in chunk.records]
    return header, records


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("dask")


@pytest.fixture(scope="module")
def model_path(workdir):
    train = _write_csv(workdir / "train.csv", 600, 0, bad=False)
    path = workdir / "model.vaef"
    assert cli.main(["fit", str(train), "-o", str(path), *TINY]) == 0
    return path


@pytest.fixture(scope="module")
def detector(model_path):
    return load_model(model_path)


@pytest.fixture(scope="module")
def client():
    # torch threads: see conftest; the workers set their own (filter_files' torch_threads)
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def inputs(workdir):
    folder = workdir / "in"
    folder.mkdir()
    return [_write_csv(folder / f"part{i}.csv", 150 + 40 * i, 10 + i) for i in range(4)]


# ------------------------------------------------------------ data frames
def test_score_dataframe_equals_single_process_scores(detector, client):
    from vaefilter.io.texttypes import infer_text_table

    frame = infer_text_table(_table(400, 3).astype(str), categorical={"colour"})
    frame.index = np.arange(1000, 1400)
    ddf = dd.from_pandas(frame, npartitions=5)
    lazy = score_dataframe(detector, ddf)
    scores = lazy.compute()
    np.testing.assert_allclose(scores["log_px"].to_numpy(), detector.score_samples(frame), rtol=1e-6)
    np.testing.assert_array_equal(scores["is_valid"].to_numpy(), detector.predict(frame) == 1)
    # every row of every partition is there, once, in order
    np.testing.assert_array_equal(lazy.map_partitions(len).compute(), ddf.map_partitions(len).compute())
    np.testing.assert_array_equal(scores.index, frame.index)
    assert list(scores.columns) == ["log_px", "is_valid", "reason"]
    assert (scores["reason"][~scores["is_valid"]] != "").all()


def test_a_row_that_cannot_be_scored_is_invalid_not_a_failed_partition(detector, client):
    from vaefilter.io.texttypes import infer_text_table

    frame = infer_text_table(_table(50, 4).astype(str), categorical={"colour"})
    frame.loc[7, "x0"] = np.nan  # never missing in training: scored out of support, not a failed partition
    ddf = dd.from_pandas(frame, npartitions=3)
    scores = score_dataframe(detector, ddf).compute()
    assert len(scores) == 50 and not scores.loc[7, "is_valid"]
    good = frame.drop(index=7)
    np.testing.assert_allclose(scores.drop(index=7)["log_px"], detector.score_samples(good), rtol=1e-6)


def test_explain_dataframe_matches_explain(detector, client):
    from vaefilter.io.texttypes import infer_text_table

    frame = infer_text_table(_table(120, 5).astype(str), categorical={"colour"})
    explained = explain_dataframe(detector, dd.from_pandas(frame, npartitions=3)).compute()
    expected = detector.explain(frame)
    assert list(explained.columns) == list(expected.columns)
    np.testing.assert_allclose(explained["log_px"], expected["log_px"], rtol=1e-6)
    np.testing.assert_allclose(explained[list(detector.schema_.names)], expected[list(detector.schema_.names)],
                               rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------- many files
def _check_outputs(path, valid, invalid):
    """valid + invalid account for every record; valid is a byte-exact subsequence."""
    header, records = _records(path)
    valid_header, valid_records = _records(valid)
    _, invalid_records = _records(invalid)
    assert valid_header == header
    assert len(valid_records) + len(invalid_records) == len(records)
    it = iter(records)
    assert all(any(r == v for r in it) for v in valid_records)  # subsequence, bytes and order
    kept = set(valid_records)
    rejected = [r for r in records if r not in kept]
    assert [i.startswith(r.rstrip(b"\r\n")) for i, r in zip(invalid_records, rejected)] == [True] * len(rejected)
    return len(valid_records), len(invalid_records)


def test_filter_files_on_a_cluster_matches_the_single_file_command(model_path, inputs, client, workdir):
    out = workdir / "out"
    results = filter_files(str(model_path), str(inputs[0].parent / "*.csv"), str(out / "valid-*.csv"),
                           str(out / "invalid-*.csv"), scheduler=client)
    assert [r["input"] for r in results] == [str(p) for p in inputs]
    for path, result in zip(inputs, results):
        n_valid, n_invalid = _check_outputs(path, result["valid"], result["invalid"])
        assert (result["n_valid"], result["n_invalid"]) == (n_valid, n_invalid)
        assert n_invalid >= 3  # the three bad records at least
        single = workdir / f"single-{path.stem}"
        single.mkdir()
        assert cli.main(["filter", str(path), "-m", str(model_path), "--valid", str(single / "v.csv"),
                         "--invalid", str(single / "r.csv"), "-q"]) == 0
        assert (single / "v.csv").read_bytes() == open(result["valid"], "rb").read()
        assert (single / "r.csv").read_bytes() == open(result["invalid"], "rb").read()


def _die_mid_file(model_path, input_path, valid_path, invalid_path, *, marker, victim, **options):
    """On its first run for `victim`, kill this worker process after part of the file is written."""
    if os.path.basename(input_path) == victim and not os.path.exists(marker):
        open(marker, "w").close()
        original, calls = pipeline.chunk_results, []

        def chunk_results_then_die(*args):
            calls.append(1)
            if len(calls) == 3:  # two chunks are in the temporary outputs
                os._exit(1)
            return original(*args)

        pipeline.chunk_results = chunk_results_then_die
    return filter_file(model_path, input_path, valid_path, invalid_path, **options)


def test_a_worker_killed_mid_file_loses_and_duplicates_nothing(model_path, inputs, client, workdir):
    out = workdir / "out-killed"
    marker = workdir / "killed-once"
    task = functools.partial(_die_mid_file, marker=str(marker), victim=inputs[1].name)
    results = filter_files(str(model_path), [str(p) for p in inputs], str(out / "valid-*.csv"),
                           str(out / "invalid-*.csv"), scheduler=client, chunk_rows=40, file_task=task)
    assert marker.exists()  # the worker did die once
    assert len(results) == len(inputs)
    for path, result in zip(inputs, results):
        _check_outputs(path, result["valid"], result["invalid"])
    finals = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert finals == sorted([f"valid-{p.stem}.csv" for p in inputs] + [f"invalid-{p.stem}.csv" for p in inputs])
    # the dead worker left hidden temporaries (it died mid-file), never a final name, and
    # filter_files removed them at the end (issue 14, item 7)
    assert not any(p.name.startswith(".") for p in out.iterdir())


def test_cli_filter_on_a_glob_with_a_scheduler_address(model_path, inputs, client, workdir, capsys):
    out = workdir / "out-cli"
    argv = ["filter", str(inputs[0].parent / "*.csv"), "-m", str(model_path), "--valid", str(out / "v-*.csv"),
            "--invalid", str(out / "r-*.csv"), "--scheduler", client.scheduler.address, "--fail-on-invalid"]
    assert cli.main(argv) == 1  # rows were rejected
    for path in inputs:
        _check_outputs(path, out / f"v-{path.stem}.csv", out / f"r-{path.stem}.csv")
    assert f"{len(inputs)} file(s):" in capsys.readouterr().err
    # several files need '*' patterns: a usage error, exit 2
    assert cli.main(["filter", *map(str, inputs), "-m", str(model_path), "--valid", str(out / "v.csv"),
                     "--invalid", str(out / "r.csv")]) == 2
    assert "exactly one '*'" in capsys.readouterr().err


def test_a_failing_file_is_reported_and_the_others_are_written(model_path, inputs, workdir):
    folder = workdir / "mixed"
    folder.mkdir()
    (folder / "broken.csv").write_text("x0,colour\n1.0,red\n")  # lacks a model column
    good = folder / "good.csv"
    good.write_bytes(inputs[0].read_bytes())
    with pytest.raises(FilterFilesError, match="broken.csv.*x1") as info:
        filter_files(str(model_path), str(folder / "*.csv"), str(folder / "out" / "v-*.csv"),
                     str(folder / "out" / "r-*.csv"), scheduler="synchronous")
    assert [r["input"] for r in info.value.results] == [str(good)]
    assert sorted(os.listdir(folder / "out")) == ["r-good.csv", "v-good.csv"]


def test_a_failing_file_on_a_local_cluster_prints_no_worker_tracebacks(model_path, inputs, workdir, capfd):
    # issue 14, item 15: no worker tracebacks (here on this module's client, which the CLI finds;
    # the CLI's own local cluster: test_the_clis_own_local_cluster_is_quiet_and_leaves_no_scratch_folder)
    folder = workdir / "mixed-local"
    folder.mkdir()
    (folder / "broken.csv").write_text("x0,colour\n1.0,red\n")
    (folder / "good.csv").write_bytes(inputs[0].read_bytes())
    capfd.readouterr()
    code = cli.main(["filter", str(folder / "*.csv"), "-m", str(model_path), "--valid", str(folder / "o" / "v-*.csv"),
                     "--invalid", str(folder / "o" / "r-*.csv"), "-q"])
    err = capfd.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "broken.csv" in err and "Traceback" not in err, err
    assert sorted(os.listdir(folder / "o")) == ["r-good.csv", "v-good.csv"]


def test_the_clis_own_local_cluster_is_quiet_and_leaves_no_scratch_folder(model_path, inputs, tmp_path):
    # in a process of its own: in this one, the module's client is the one the CLI would find
    # (test_a_failing_file_on_a_local_cluster_prints_no_worker_tracebacks runs on that client)
    import contextlib
    import socket
    import subprocess
    import sys
    from pathlib import Path

    import vaefilter

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    (tmp_path / "broken.csv").write_text("x0,colour\n1.0,red\n")  # lacks a model column
    env = {**os.environ, "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(vaefilter.__file__).parents[1])}
    with contextlib.ExitStack() as stack:
        try:  # Dask's default HTTP port taken, as by a user's own cluster: it printed a warning
            stack.enter_context(socket.create_server(("", 8787)))
        except OSError:
            pass  # taken already
        done = subprocess.run([sys.executable, "-m", "vaefilter", "filter", str(inputs[0]), str(inputs[1]),
                               str(tmp_path / "broken.csv"), "-m", str(model_path),
                               "--valid", str(tmp_path / "o" / "v-*.csv"),
                               "--invalid", str(tmp_path / "o" / "r-*.csv"), "-q"],
                              env=env, capture_output=True, timeout=300)
    err = done.stderr.decode()
    assert done.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.count("broken.csv") == 1 and "broken.csv: line 1: the header lacks column(s)" in err, err
    assert sorted(os.listdir(tmp_path / "o")) == sorted(f"{k}-{p.stem}.csv" for k in "rv" for p in inputs[:2])
    assert "dask-scratch-space" not in os.listdir(scratch)  # was left with its lock files after every run


def test_output_patterns_may_not_name_the_model(model_path, inputs, tmp_path):
    # issue 14, item 2, for many files
    model = tmp_path / f"{inputs[0].stem}.vf"  # what the pattern '*.vf' gives for the first input
    model.write_bytes(model_path.read_bytes())
    with pytest.raises(ValueError, match="--model and --valid of "):
        filter_files(str(model), [str(p) for p in inputs[:2]], str(tmp_path / "*.vf"),
                     str(tmp_path / "r-*.csv"), scheduler="synchronous")
    assert model.read_bytes() == model_path.read_bytes()


def test_an_interrupted_run_removes_the_temporary_files_workers_left(model_path, inputs, tmp_path):
    # issue 14, item 7: a worker killed mid-file cannot clean up; filter_files does
    def dies_mid_file(model, source, valid, invalid, **options):
        for out in (valid, invalid):
            directory, base = os.path.split(out)
            open(os.path.join(directory, f".{base}.0123456789ab.tmp"), "wb").close()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        filter_files(str(model_path), [str(p) for p in inputs[:2]], str(tmp_path / "v-*.csv"),
                     str(tmp_path / "r-*.csv"), scheduler="synchronous", file_task=dies_mid_file)
    assert list(tmp_path.iterdir()) == []


def test_output_names_and_input_expansion(tmp_path):
    assert output_path("out/valid-*.csv", "in/2024-01.csv") == "out/valid-2024-01.csv"
    with pytest.raises(ValueError, match="exactly one"):
        output_path("out/valid.csv", "a.csv")
    for name in ["b.csv", "a.csv"]:
        (tmp_path / name).write_text("x\n1\n")
    assert expand_inputs(str(tmp_path / "*.csv")) == [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    with pytest.raises(ValueError, match="no file matches"):
        expand_inputs(str(tmp_path / "*.tsv"))
    # one file named twice, however spelt, is filtered once under its first spelling
    a = str(tmp_path / "a.csv")
    dotted = os.path.join(str(tmp_path), ".", "a.csv")
    assert expand_inputs([a, a, dotted, str(tmp_path / "*.csv")]) == [a, str(tmp_path / "b.csv")]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.csv").write_text("x\n1\n")
    with pytest.raises(ValueError, match="same stem"):
        filter_files("m", [str(tmp_path / "a.csv"), str(tmp_path / "sub" / "a.csv")], "o/v-*.csv", "o/r-*.csv")


def test_a_missing_extra_names_the_pip_command(detector, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "dask.dataframe", None)
    with pytest.raises(ImportError, match=r"vaefilter\[dask\]"):
        score_dataframe(detector, None)


# ------------------------------------------------ joblib's Dask backend
def test_grid_search_through_joblibs_dask_backend(client):
    import pickle

    import joblib
    from sklearn.model_selection import GridSearchCV

    from vaefilter import VAEOutlierDetector

    X = _table(300, 7)[["x0", "x1"]].to_numpy()
    base = VAEOutlierDetector(latent_dim=2, hidden_layer_sizes=(16,), max_epochs=10, n_importance_samples=16,
                              proposal_steps=5, random_state=0)
    with joblib.parallel_backend("dask"):
        search = GridSearchCV(base, {"latent_dim": [1, 2]}, cv=3, n_jobs=-1).fit(X)
    assert set(search.cv_results_["param_latent_dim"]) == {1, 2}
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    # what travels to the workers is small: parameters, or a CPU state dict
    assert len(pickle.dumps(base)) < 5_000
    assert len(pickle.dumps(search.best_estimator_)) < 50_000


# ---------------------------------------------------------------- Parquet
def test_parquet_rows_end_up_in_exactly_one_output(model_path, detector, client, workdir):
    from vaefilter.io.texttypes import infer_text_table

    folder = workdir / "pq"
    folder.mkdir()
    frames = []
    for i in range(3):
        frame = infer_text_table(_table(100, 20 + i).astype(str), categorical={"colour"})
        frame.index = np.arange(100 * i, 100 * (i + 1))
        frame.loc[100 * i, ["x0", "x1"]] = [40.0, -40.0]
        frame.to_parquet(folder / f"p{i}.parquet")
        frames.append(frame)
    whole = pd.concat(frames)
    results = filter_files(str(model_path), str(folder / "*.parquet"), str(workdir / "valid.parquet"),
                           str(workdir / "invalid.parquet"), scheduler=client)
    valid = pd.read_parquet(workdir / "valid.parquet")
    invalid = pd.read_parquet(workdir / "invalid.parquet")
    assert len(valid) + len(invalid) == len(whole) == 300
    assert sorted([*valid.index, *invalid.index]) == list(whole.index)
    assert results[0]["n_valid"] == len(valid) and results[0]["n_invalid"] == len(invalid)
    expected_valid = whole.index[detector.predict(whole) == 1]
    assert sorted(valid.index) == list(expected_valid)
    pd.testing.assert_frame_equal(valid.sort_index()[["x0", "x1"]], whole.loc[expected_valid, ["x0", "x1"]],
                                  check_names=False)
    assert list(invalid.columns) == ["x0", "x1", "colour", "log_px", "band_lower", "band_upper", "reason",
                                     "p_value"]
    assert {0, 100, 200} <= set(invalid.index)
    assert not [p for p in os.listdir(workdir) if p.endswith(".tmp")]


# ------------------------------------------- device logic, checked on a CPU
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_device_auto_is_the_cpu_without_a_gpu(detector):
    assert resolve_device("auto") == torch.device("cpu")
    assert detector.device == "auto"
    assert all(p.device.type == "cpu" for p in detector._network().parameters())


def test_a_reloaded_model_holds_its_weights_on_the_cpu(detector, workdir):
    path = workdir / "again.vaef"
    path.write_bytes(model_bytes(detector))
    loaded = load_model(path)
    assert all(t.device.type == "cpu" for t in loaded.network_.state_dict().values())
