"""Scoring in threads (``n_jobs``): the same scores and decisions as one thread, and torch's settings left alone."""

from __future__ import annotations

import json
import threading
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch

from vaefilter import VAEOutlierDetector
from vaefilter.datasets import load_titanic
from vaefilter.persistence import load_model, pack_model_file, save_model, unpack_model_file
from vaefilter import estimator as estimator_module
from vaefilter.scoring import threads
from vaefilter.scoring.threads import (
    MIN_ROWS_PER_DECIDING_THREAD,
    MIN_ROWS_PER_THREAD,
    map_row_slices,
    scoring_threads,
)

SMALL = dict(latent_dim=2, hidden_layer_sizes=(16,), n_importance_samples=16, max_epochs=8, proposal_steps=20,
             random_state=0)
N_ROWS = 2 * MIN_ROWS_PER_DECIDING_THREAD + 300  # two threads' worth under sequential decisions too


@pytest.fixture(scope="module")
def titanic_model():
    frame = load_titanic()
    # K = 40: enough draws for rounds of sequential decisions (fewer than 20 take all K at once)
    detector = VAEOutlierDetector(**{**SMALL, "n_importance_samples": 40}, handle_missing="model").fit(frame.iloc[:600])
    assert detector.decision_margins_ is not None
    rows = frame.sample(N_ROWS, replace=True, random_state=1).reset_index(drop=True)
    # wild values, so that rows fall below the band and explain conditions their deficits
    rows.loc[::7, "fare"] = rows.loc[::7, "fare"] * 1000
    return detector, rows


def _thread_names_of(name):
    """Names of the threads the estimator's ``name`` (a scoring function) ran in."""
    seen = []
    original = getattr(estimator_module, name)

    def spy(*args, **kwargs):
        seen.append(threading.current_thread().name)
        return original(*args, **kwargs)

    return seen, mock.patch.object(estimator_module, name, spy)


@pytest.fixture
def scoring_thread_names():
    """Names of the threads estimate_log_marginal ran in, during the test."""
    seen, patch = _thread_names_of("estimate_log_marginal")
    with patch:
        yield seen


def _torch_threads_of_a_new_thread():
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]


def _with_jobs(detector, n_jobs):
    detector.set_params(n_jobs=n_jobs)
    return detector


# The threads share one call's pass budget, so their passes are shorter than
# one thread's: the same floats up to float32 rounding (BLAS picks kernels by
# shape; see vaefilter.scoring.marginal), and the same decisions.
SCORE_RTOL = 1e-6


def test_two_threads_score_as_one(titanic_model, scoring_thread_names):
    detector, rows = titanic_model
    one = _with_jobs(detector, 1).score_samples(rows)
    assert scoring_thread_names == ["MainThread"]
    two = _with_jobs(detector, 2).score_samples(rows)
    assert len(scoring_thread_names) == 3 and all(n.startswith("vaefilter-score") for n in scoring_thread_names[1:])
    np.testing.assert_allclose(one, two, rtol=SCORE_RTOL)


@pytest.mark.parametrize("sequential", [False, True])
def test_two_threads_explain_as_one(titanic_model, sequential):
    detector, rows = titanic_model
    one = _with_jobs(detector, 1).explain(rows, sequential=sequential)
    seen, patch = _thread_names_of("sequential_log_marginal" if sequential else "estimate_log_marginal")
    with patch:
        two = _with_jobs(detector, 2).explain(rows, sequential=sequential)
    assert len(seen) == 2 and all(n.startswith("vaefilter-score") for n in seen)
    assert (~one["is_valid"]).sum() > 100
    for column in ["is_valid", "p_value"] + (["n_draws"] if sequential else []):
        pd.testing.assert_series_equal(one[column], two[column])
    np.testing.assert_allclose(one["log_px"], two["log_px"], rtol=SCORE_RTOL)
    # the reasons name the same columns; their nats are rounded to 0.1
    assert (one["reason"] == two["reason"]).mean() > 0.999
    np.testing.assert_allclose(one.iloc[:, 4:].to_numpy(float), two.iloc[:, 4:].to_numpy(float), rtol=1e-5, atol=1e-5)


def test_the_conditioned_deficits_run_in_threads(titanic_model):
    detector, rows = titanic_model
    one = _with_jobs(detector, 1).explain(rows)
    seen, patch = _thread_names_of("log_marginal_without_columns")
    with patch:
        two = _with_jobs(detector, 2).explain(rows)
    assert any(n.startswith("vaefilter-score") for n in seen), seen
    np.testing.assert_allclose(one.iloc[:, 4:].to_numpy(float), two.iloc[:, 4:].to_numpy(float), rtol=1e-5, atol=1e-5)


def test_predict_and_decision_function_in_threads(titanic_model):
    detector, rows = titanic_model
    one = _with_jobs(detector, 1)
    labels, distance = one.predict(rows), one.decision_function(rows)
    two = _with_jobs(detector, 2)
    seen, patch = _thread_names_of("sequential_log_marginal")
    with patch:
        np.testing.assert_array_equal(labels, two.predict(rows))
        np.testing.assert_allclose(distance, two.decision_function(rows), rtol=SCORE_RTOL, atol=1e-5)
    assert len(seen) == 4 and all(n.startswith("vaefilter-score") for n in seen)


def test_callers_side_by_side_get_their_own_rows_and_leave_torch_threads_alone(titanic_model):
    detector, rows = titanic_model
    expected = _with_jobs(detector, 1).score_samples(rows)
    parallel = _with_jobs(detector, 2)
    before = torch.get_num_threads()
    results = {}

    def call(i):
        results[i] = parallel.score_samples(rows.iloc[::-1] if i % 2 else rows)

    callers = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    for i, scores in results.items():
        np.testing.assert_allclose(scores[::-1] if i % 2 else scores, expected, rtol=SCORE_RTOL)
    assert len(results) == 3
    assert torch.get_num_threads() == before
    assert _torch_threads_of_a_new_thread() == before


def test_an_error_in_a_thread_raises_and_torch_threads_are_restored(titanic_model):
    detector, rows = titanic_model
    before = torch.get_num_threads()
    with mock.patch.object(estimator_module, "estimate_log_marginal", side_effect=RuntimeError("boom")):
        with pytest.raises(RuntimeError, match="boom"):
            _with_jobs(detector, 2).score_samples(rows)
    assert torch.get_num_threads() == before


def test_slices_cover_every_row_once_in_order():
    calls = []

    def score(start, stop, floats):
        calls.append((start, stop, floats, torch.get_num_threads()))
        return np.arange(start, stop)

    before = torch.get_num_threads()
    out = np.concatenate(map_row_slices(score, 10_001, 3, 2**20))
    np.testing.assert_array_equal(out, np.arange(10_001))
    assert sorted(c[:3] for c in calls) == [(0, 3334, 2**20), (3334, 6667, 2**20), (6667, 10_001, 2**20)]
    # a many-core machine's budget is capped per thread
    calls.clear()
    map_row_slices(score, 10_001, 2, 2**25)
    assert {c[2] for c in calls} == {threads.MAX_THREAD_PASS_FLOATS}
    assert all(c[3] == 1 for c in calls)  # one torch thread each
    assert torch.get_num_threads() == before
    # threads started afterwards begin from the caller's count, not the workers' 1
    assert _torch_threads_of_a_new_thread() == before


def test_thread_count():
    rows = 10 * MIN_ROWS_PER_THREAD
    assert scoring_threads(1, "cpu", rows) == 1
    assert scoring_threads(4, "cpu", rows) == 4
    assert scoring_threads(4, "cpu", 2 * MIN_ROWS_PER_THREAD + 1) == 2  # at least MIN_ROWS_PER_THREAD each
    assert scoring_threads(4, "cpu", MIN_ROWS_PER_THREAD - 1) == 1
    assert scoring_threads(4, "cpu", 2 * MIN_ROWS_PER_THREAD, MIN_ROWS_PER_DECIDING_THREAD) == 1
    assert scoring_threads(4, "cpu", 2 * MIN_ROWS_PER_DECIDING_THREAD, MIN_ROWS_PER_DECIDING_THREAD) == 2
    assert scoring_threads(-1, "cpu", 10**9) == threads.effective_n_jobs(-1)
    assert scoring_threads(4, "cuda", rows) == 1
    with mock.patch.object(torch, "get_num_threads", return_value=3):
        assert scoring_threads(None, "cpu", rows) == 3


def test_n_jobs_is_validated():
    X = np.random.RandomState(0).normal(size=(50, 2))
    for bad in ("all", 0, 1.5):
        with pytest.raises(ValueError, match="n_jobs"):
            VAEOutlierDetector(n_jobs=bad).fit(X)


def test_model_files_keep_n_jobs_and_old_files_load_without_it(tmp_path):
    X = np.random.RandomState(0).normal(size=(200, 3))
    detector = VAEOutlierDetector(**SMALL, n_jobs=2).fit(X)
    path = tmp_path / "m.vf"
    save_model(detector, path)
    assert load_model(path).n_jobs == 2
    raw, payload = unpack_model_file(path.read_bytes())
    header = json.loads(raw)
    del header["params"]["n_jobs"]
    old = tmp_path / "old.vf"
    old.write_bytes(pack_model_file(header, payload))
    loaded = load_model(old)
    assert loaded.n_jobs is None
    np.testing.assert_array_equal(loaded.score_samples(X), detector.score_samples(X))
    for value in (-1, 4096):  # any count the estimator takes, the file keeps
        save_model(detector.set_params(n_jobs=value), path)
        assert load_model(path).n_jobs == value
