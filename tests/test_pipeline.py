"""The library's filtering path: streams in and out, plain options, a summary back."""

import io

import numpy as np
import pandas as pd
import pytest

from vaefilter import VAEOutlierDetector
from vaefilter.cli import _fit_params, build_parser
from vaefilter.pipeline import REJECT_FIELDS, SCORE_FIELDS, RunSummary, filter_csv, score_csv

SMALL = dict(latent_dim=2, hidden_layer_sizes=(8,), max_epochs=3, n_importance_samples=5, proposal_steps=0,
             posterior_search_steps=0, random_state=0)


@pytest.fixture(scope="module")
def detector():
    rng = np.random.RandomState(0)
    X = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    return VAEOutlierDetector(**SMALL).fit(X)


def _batch():
    rng = np.random.RandomState(1)
    lines = [f"{a:.4f},{b:.4f}\n" for a, b in rng.normal(size=(40, 2))]
    lines[5] = "1,2,3\n"  # unparseable: three fields
    lines[9] = "x,0.5\n"  # a cell that is not a number
    lines[20] = "400,0.1\n"  # far outside the training range
    return b"a,b\n" + "".join(lines).encode()


def test_filter_csv_splits_streams_and_counts_every_row(detector):
    data = _batch()
    valid, invalid = io.BytesIO(), io.BytesIO()
    summary = filter_csv(detector, io.BytesIO(data), valid, invalid)
    assert isinstance(summary, RunSummary)
    assert summary.n_rows == 40 and summary.n_valid + summary.n_rejected == 40
    assert summary.n_unscored == 2 and summary.first_unscored.startswith("unparseable: line 7")
    assert summary.seconds >= summary.seconds_scoring > 0
    valid_lines = valid.getvalue().splitlines(keepends=True)
    invalid_lines = invalid.getvalue().splitlines(keepends=True)
    assert valid_lines[0] == b"a,b\n" and len(valid_lines) - 1 == summary.n_valid
    assert invalid_lines[0] == b"a,b," + ",".join(REJECT_FIELDS).encode() + b"\n"
    assert len(invalid_lines) - 1 == summary.n_rejected
    # every record in exactly one output, valid ones byte for byte
    body = data.splitlines(keepends=True)[1:]
    assert all(line in body for line in valid_lines[1:])
    assert b"400,0.1,-" in invalid.getvalue()


def test_score_csv_writes_every_row_with_the_same_verdicts(detector):
    data = _batch()
    valid, invalid = io.BytesIO(), io.BytesIO()
    split = filter_csv(detector, io.BytesIO(data), valid, invalid)
    scored = io.BytesIO()
    summary = score_csv(detector, io.BytesIO(data), scored)
    assert (summary.n_rows, summary.n_valid, summary.n_unscored) == (split.n_rows, split.n_valid, split.n_unscored)
    table = pd.read_csv(io.BytesIO(scored.getvalue()), on_bad_lines="skip")
    assert list(table.columns) == ["a", "b", *SCORE_FIELDS]


def test_filter_csv_refuses_an_output_that_is_the_input(detector, tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(_batch())
    with pytest.raises(ValueError, match="both name"):
        filter_csv(detector, path, path, tmp_path / "r.csv")


def test_the_cli_passes_the_early_stopping_patience_on():
    args = build_parser().parse_args(["fit", "train.csv", "-o", "m.vf", "--n-iter-no-change", "7", "--epochs", "30"])
    params = _fit_params(args)
    assert params["n_iter_no_change"] == 7 and params["max_epochs"] == 30
    VAEOutlierDetector(**params)  # every option is an estimator parameter


def test_the_cli_takes_its_defaults_from_the_estimator():
    defaults = VAEOutlierDetector().get_params()
    args = build_parser().parse_args(["fit", "train.csv", "-o", "m.vf"])
    assert args.latent_dim == defaults["latent_dim"]
    assert tuple(args.hidden) == tuple(defaults["hidden_layer_sizes"])
    assert args.epochs == defaults["max_epochs"] and args.batch_size == defaults["batch_size"]
    assert args.n_iter_no_change == defaults["n_iter_no_change"]
    assert args.learning_rate == defaults["learning_rate"]
    assert args.importance_samples == defaults["n_importance_samples"]
    assert args.proposal_steps == defaults["proposal_steps"]
    assert args.posterior_search_steps == defaults["posterior_search_steps"]
    assert args.validation_fraction == defaults["validation_fraction"]
    assert tuple(args.percentiles) == tuple(defaults["threshold_percentiles"])
    assert args.device == defaults["device"]


def test_importing_vaefilter_makes_idle_openmp_threads_sleep_unless_told_otherwise(monkeypatch):
    # spinning torch threads on a busy machine made 2-thread scoring 8-17x slower than 1 thread
    import importlib
    import os
    import subprocess
    import sys

    import vaefilter

    # The setting must be in place when torch loads: a fresh interpreter records it at the first
    # lookup of torch and ends there (importing torch itself costs seconds, and teaches nothing here).
    code = """if True:
        import os, sys

        class Watch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch":
                    print(os.environ.get("OMP_WAIT_POLICY"), flush=True)
                    os._exit(0)

        sys.meta_path.insert(0, Watch())
        import vaefilter
        vaefilter.VAEOutlierDetector  # the estimator, and torch, load on first use
        print("vaefilter loaded without torch")
    """
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PASSIVE"]
    # a user's value survives the package's import; without one it is set (torch is loaded by now, so
    # a reload of the package runs the same code at no cost)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    importlib.reload(vaefilter)
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    importlib.reload(vaefilter)
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_a_run_keeps_the_objects_alive_before_it_out_of_the_collector_and_puts_them_back(detector, monkeypatch):
    import gc

    import vaefilter.pipeline as pipeline

    frozen_during = []
    original = pipeline.chunk_results

    def recording(*args):
        frozen_during.append(gc.get_freeze_count())
        return original(*args)

    monkeypatch.setattr(pipeline, "chunk_results", recording)
    before = gc.get_freeze_count()
    filter_csv(detector, io.BytesIO(_batch()), io.BytesIO(), io.BytesIO())
    score_csv(detector, io.BytesIO(_batch()), io.BytesIO())
    assert len(frozen_during) == 2 and min(frozen_during) > before
    assert gc.get_freeze_count() == before == 0
