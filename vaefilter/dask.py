"""Scaling out with Dask: score dask DataFrames and filter many files in parallel.

Three entry points, all behind the optional ``dask`` extra
(``pip install 'vaefilter[dask]'``):

* :func:`score_dataframe` / :func:`explain_dataframe`: a fitted detector
  applied partition by partition to a ``dask.dataframe.DataFrame``. The model
  enters the task graph once, as a single key (scattered to every worker with
  ``broadcast=True`` when a ``distributed.Client`` is active, else wrapped in
  ``dask.delayed``), so it is not pickled again for every partition. A row's
  score depends on that row alone (per-row importance draws), so the scores
  equal ``detector.score_samples`` on the whole table, whatever the partitioning.

* :func:`filter_files`: ``vaefilter filter`` over many CSV files, one task per
  file. Each task runs the very code path of the single-file command
  (:func:`vaefilter.pipeline.filter_csv`): valid records are copied byte for byte,
  every record lands in exactly one of the two outputs, and both outputs are
  written to hidden temporary files and renamed into place. A task is
  therefore idempotent: when a worker dies mid-file, Dask reruns the task on
  another worker, and the file's outputs are either complete or absent, never
  partial or duplicated. Inputs and outputs must lie on a file system every
  worker sees (the same paths on every machine).

* Parquet: ``filter_files`` over ``*.parquet`` inputs reads them with
  ``dd.read_parquet``, scores them partition by partition and writes two
  Parquet datasets (directories): the valid rows with their original columns,
  the rejected rows with ``log_px``, ``band_lower``, ``band_upper``,
  ``reason`` and ``p_value`` appended (``--fdr`` is for CSV inputs only). Byte-exactness has no meaning there; row-exactness
  holds: every input row is in exactly one output.

Where work runs (``scheduler``):

* ``None``: the current ``distributed`` client when one exists; otherwise a
  ``distributed.LocalCluster`` of worker *processes* with one thread each
  (``n_workers`` defaults to min(number of files, CPU cores)) that lives for
  the call. Processes rather than threads because the CSV splitting and
  per-record writing hold the GIL; one thread per worker, with torch limited
  to ``cores // n_workers`` intra-op threads, because torch's OpenMP threads
  oversubscribe shared cores badly. A single file runs in-process: starting a
  cluster (seconds) would cost more than it saves.
* ``"synchronous"``: in this process, one file after another (debugging).
* an address such as ``"tcp://scheduler:8786"``: a running Dask cluster.
* a ``distributed.Client``: used as is.
"""

from __future__ import annotations

import contextlib
import glob as globlib
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from ._optional import import_optional
from .band import band_pvalues
from .io.csvio import atomic_directories, remove_temporaries
from .drift import DEFAULT_ALPHA, batch_drift
from .estimator import deficit_column_names
from .pipeline import (REJECT_FIELDS, check_output_directory, check_paths, error_text,
                       filter_csv, input_stem, output_path, score_table, write_summary_json)

# The Parquet path scores every row at full K (score_table's default), so its
# rejected rows carry no n_draws field.
_PARQUET_REJECT_FIELDS = [f for f in REJECT_FIELDS if f != "n_draws"]

__all__ = [
    "FilterFilesError",
    "explain_dataframe",
    "expand_inputs",
    "filter_file",
    "filter_files",
    "filter_parquet",
    "output_path",
    "score_dataframe",
]

_PURPOSE = "Scaling out with Dask (vaefilter.dask)"


def _dd():
    return import_optional("dask.dataframe", extra="dask", purpose=_PURPOSE)


def _distributed():
    return import_optional("distributed", extra="dask", purpose=_PURPOSE)


class FilterFilesError(ValueError):
    """Some files could not be filtered; the others were.

    ``failures`` maps input path -> error text, ``results`` holds the
    summaries of the files that were filtered.
    """

    def __init__(self, failures, results):
        self.failures, self.results = failures, results
        # an error that names its file already ('a.csv: line 3: ...') is not prefixed twice
        lines = [error if error.startswith(f"{path}:") else f"{path}: {error}" for path, error in failures.items()]
        super().__init__(f"{len(failures)} of {len(failures) + len(results)} file(s) failed: " + "; ".join(lines))


# ------------------------------------------------------------ data frames
def _current_client():
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def _ship(detector, client=None):
    """The fitted detector as one graph key: scattered to all workers, or a delayed literal."""
    client = client or _current_client()
    if client is not None:
        return client.scatter(detector, broadcast=True, hash=False)
    dask = import_optional("dask", extra="dask", purpose=_PURPOSE)
    return dask.delayed(detector, pure=True, traverse=False)


def _model_columns(detector, columns):
    names = getattr(detector, "feature_names_in_", None)
    if names is None:
        return None
    names = [str(n) for n in names]
    missing = [n for n in names if n not in set(map(str, columns))]
    if missing:
        raise ValueError(f"the data frame lacks column(s) the model needs: {missing}")
    return names


def _limit_torch_threads(n):
    if n:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(int(n))


def _score_meta(index, p_value=False):
    columns = {"log_px": pd.Series(dtype="float64"), "is_valid": pd.Series(dtype="bool"), "reason": pd.Series(dtype=str)}
    if p_value:
        columns["p_value"] = pd.Series(dtype="float64")
    return pd.DataFrame(columns, index=index[:0])


def _explain_meta(detector, index):
    """An empty frame of explain's columns: its fields, then its deficit columns."""
    meta = _score_meta(index, p_value=True)
    for name in deficit_column_names(detector.schema_.names):
        meta[name] = pd.Series(dtype="float64")
    return meta


def _score_partition(partition, detector, names, torch_threads=None):
    """log_px, is_valid, reason for every row of one partition, in row order.

    The pipeline's scoring (:func:`vaefilter.pipeline.score_table`): a row
    whose score fails (say a missing value the model never saw) becomes
    invalid with the error as its reason instead of failing the partition.
    """
    _limit_torch_threads(torch_threads)
    frame = partition if names is None else partition[names]
    out = _score_meta(partition.index)
    if len(frame) == 0:
        return out
    # positional labels: score_table's per-row fallback needs unique labels
    scored = score_table(detector, frame.reset_index(drop=True))
    return pd.DataFrame(
        {
            "log_px": scored["log_px"].to_numpy(dtype="float64"),
            "is_valid": scored["is_valid"].to_numpy(dtype="bool"),
            "reason": scored["reason"].astype(str).to_numpy(),
        },
        index=partition.index,
    )


def _check_dask_call(detector, ddf):
    """A fitted detector and a dask DataFrame, refused now rather than at ``.compute()``."""
    dd = _dd()
    check_is_fitted(detector)
    if not isinstance(ddf, dd.DataFrame):
        raise TypeError(f"expected a dask DataFrame, got {type(ddf).__name__}; for a pandas DataFrame call the "
                        "detector's own methods (score_samples, predict, explain)")


def score_dataframe(detector, ddf, *, torch_threads=None):
    """Score a dask DataFrame partition by partition.

    Parameters
    ----------
    detector : fitted VAEOutlierDetector
    ddf : dask.dataframe.DataFrame
        Typed rows (as the detector was fitted on); with a detector fitted on
        a DataFrame, its ``feature_names_in_`` columns are used and others ignored.
    torch_threads : int, optional
        Intra-op torch threads in each task (1 avoids oversubscription when a
        worker process shares cores with others).

    Returns
    -------
    scores : dask.dataframe.DataFrame
        ``log_px`` (float64, nats), ``is_valid`` (bool), ``reason`` (str) per
        row, with ``ddf``'s index and partitions. Lazy: call ``.compute()``.
    """
    _check_dask_call(detector, ddf)
    names = _model_columns(detector, ddf.columns)
    return ddf.map_partitions(
        _score_partition, _ship(detector), names, torch_threads, meta=_score_meta(ddf._meta.index),
        enforce_metadata=False,
    )


def _explain_partition(partition, detector, names, torch_threads=None):
    _limit_torch_threads(torch_threads)
    frame = partition if names is None else partition[names]
    if not len(frame):  # a partition filtered empty: explain refuses zero rows, as scikit-learn does
        return _explain_meta(detector, partition.index)
    explained = detector.explain(frame.reset_index(drop=True))
    explained.index = partition.index
    return explained


def explain_dataframe(detector, ddf, *, torch_threads=None):
    """:meth:`VAEOutlierDetector.explain` partition by partition (lazy).

    Returns a dask DataFrame with ``log_px``, ``is_valid``, ``reason`` and one
    per-column deficit (nats) per model column, named as ``explain`` names them. Unlike :func:`score_dataframe`,
    a row that cannot be scored fails its partition, as ``explain`` does.
    """
    _check_dask_call(detector, ddf)
    names = _model_columns(detector, ddf.columns)
    meta = _explain_meta(detector, ddf._meta.index)
    return ddf.map_partitions(
        _explain_partition, _ship(detector), names, torch_threads, meta=meta, enforce_metadata=False
    )


# ------------------------------------------------------------ many files
def expand_inputs(inputs):
    """File paths from a glob, a path, or a list of either; each glob's matches sorted.

    A file named twice (``a.csv a.csv``, ``a.csv ./a.csv``, a glob and a path
    that both name it) is filtered once, under its first spelling: its rows
    then end in one output each, not two copies in one output.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files = []
    for item in inputs:
        item = os.fspath(item)
        if globlib.has_magic(item) and not os.path.exists(item):
            matches = sorted(globlib.glob(item))
            if not matches:
                raise ValueError(f"{item}: no file matches this pattern")
            files.extend(matches)
        else:
            files.append(item)
    seen = set()
    return [f for f in files if not (os.path.realpath(f) in seen or seen.add(os.path.realpath(f)))]


def _plan(files, valid_pattern, invalid_pattern, model_path=None):
    """``(input, valid, invalid)`` per file, every output its own file, apart from the inputs and the model.

    The outputs of all files are checked together: 'o-*.csv' and 'o-v*.csv'
    gave a.csv's rejected rows and va.csv's valid ones the same name,
    'o-va.csv', and the second file's output replaced the first's.
    """
    jobs = [(f, output_path(valid_pattern, f), output_path(invalid_pattern, f)) for f in files]
    stems = {}
    for f in files:
        if input_stem(f) in stems:
            raise ValueError(f"{stems[input_stem(f)]} and {f} have the same stem {input_stem(f)!r}: "
                             "their outputs would collide")
        stems[input_stem(f)] = f
    outputs = {f"{what} of {f}": out for f, *paths in jobs for what, out in zip(("--valid", "--invalid"), paths)}
    inputs = {f"input {f}": f for f in files}
    if model_path is not None:
        inputs["--model"] = model_path
    check_paths(inputs=inputs, outputs=outputs)
    return jobs


def _make_output_folders(jobs):
    """The folders of every planned output (after the checks, so that a refused run makes none)."""
    for _, valid, invalid in jobs:
        for out in (valid, invalid):
            os.makedirs(os.path.dirname(out) or ".", exist_ok=True)


def filter_file(model_path, input_path, valid_path, invalid_path, *, delimiter=",", encoding="utf-8",
                chunk_rows=65536, torch_threads=None, na_values=(), device="auto", drift_alpha=DEFAULT_ALPHA, fdr=None,
                full_k=False):
    """``vaefilter filter`` on one CSV file (:func:`vaefilter.pipeline.filter_csv`); returns a summary.

    The summary is a dict with ``input``, ``valid``, ``invalid``, ``n_valid``
    and ``n_invalid`` (records in each output), ``drift`` (the file's drift
    test as a dict, the file being one batch; None with ``drift_alpha=None``)
    and ``summary`` (the whole :class:`~vaefilter.pipeline.RunSummary` as a
    dict). Errors raise, as in the CLI.
    """
    _limit_torch_threads(torch_threads)
    # the single-file path: byte-exact, atomic outputs
    summary = filter_csv(model_path, input_path, valid_path, invalid_path, delimiter=delimiter, encoding=encoding,
                         chunk_rows=int(chunk_rows), na_values=tuple(na_values), device=device,
                         drift_alpha=drift_alpha, fdr=fdr, full_k=full_k)
    return {
        "input": os.fspath(input_path),
        "valid": os.fspath(valid_path),
        "invalid": os.fspath(invalid_path),
        "n_valid": summary.n_valid,
        "n_invalid": summary.n_rejected,
        "drift": None if summary.drift is None else summary.drift.to_dict(),
        "summary": summary.to_dict(),
    }


@dataclass
class _Runner:
    client: object = None  # None: in-process, one task after another
    torch_threads: int | None = None


# the scheduler serves health routes over HTTP even without a dashboard, on port 8787 unless told:
# with a cluster or a dashboard already there, each run printed "Port 8787 is already in use"
_QUIET_SCHEDULER = {"dashboard_address": "127.0.0.1:0"}


@contextlib.contextmanager
def _own_scratch_space():
    """Dask's ``temporary-directory`` set to a temporary folder of ours, inside the user's if any.

    By default the scheduler and workers left dask-scratch-space and its lock files behind after
    every run; a file a worker still holds open at the end must not turn the run into an error.
    """
    dask = import_optional("dask", extra="dask", purpose=_PURPOSE)
    with tempfile.TemporaryDirectory(prefix="vaefilter-dask-", dir=dask.config.get("temporary-directory", None),
                                     ignore_cleanup_errors=True) as scratch, \
            dask.config.set({"temporary-directory": scratch}):
        yield


@contextlib.contextmanager
def _runner(scheduler, n_jobs, n_workers):
    """Where the tasks run; see the module docstring."""
    if scheduler == "synchronous":
        yield _Runner(None, None)
        return
    if scheduler is None:
        current = _current_client()
        if current is not None:
            yield _Runner(current, None)
            return
        n = n_workers or min(n_jobs, os.cpu_count() or 1)
        if n_jobs <= 1 or n <= 1:
            yield _Runner(None, None)
            return
        distributed = _distributed()
        # silence_logs: a failing file is reported once, in FilterFilesError, not as worker tracebacks
        with _own_scratch_space(), \
                distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                         silence_logs=logging.CRITICAL, scheduler_kwargs=_QUIET_SCHEDULER) as cluster, \
                distributed.Client(cluster) as client:
            yield _Runner(client, max(1, (os.cpu_count() or 1) // n))
        return
    distributed = _distributed()
    if isinstance(scheduler, distributed.Client):
        yield _Runner(scheduler, None)
        return
    with distributed.Client(scheduler) as client:
        yield _Runner(client, None)


def _run_tasks(runner, fn, calls, kwargs, retries):
    """Per call, ("ok", result) or ("error", text) of fn(*call, **kwargs), in call order."""
    if runner.client is None:
        outcomes = []
        for call in calls:
            try:
                outcomes.append(("ok", fn(*call, **kwargs)))
            except Exception as exc:  # noqa: BLE001 - reported per file
                outcomes.append(("error", error_text(exc)))
        return outcomes
    distributed = _distributed()
    token = secrets.token_hex(4)
    futures = [
        runner.client.submit(fn, *call, **kwargs, pure=False, retries=retries, key=f"vaefilter-filter-{token}-{i}")
        for i, call in enumerate(calls)
    ]
    distributed.wait(futures)
    outcomes = []
    for future in futures:
        if future.status == "finished":
            outcomes.append(("ok", future.result()))
        else:
            exc = future.exception()
            outcomes.append(("error", error_text(exc)))
    return outcomes


def filter_files(model_path, inputs, valid_pattern, invalid_pattern, scheduler=None, *, n_workers=None,
                 delimiter=",", encoding="utf-8", chunk_rows=65536, torch_threads=None, retries=0,
                 file_task=None, na_values=(), device="auto", drift_alpha=DEFAULT_ALPHA, summary_json=None,
                 fdr=None, full_k=False):
    """Filter many CSV files in parallel, one task per file (or Parquet inputs, see below).

    Each CSV file is one batch for the drift test (its own, in its task); the
    Parquet inputs are one batch together, tested on log p(x) alone (no
    per-column sample).

    Parameters
    ----------
    model_path : str
        Model file written by ``vaefilter fit`` (readable by every worker).
    inputs : str or list of str
        A glob such as ``'in/*.csv'``, a path, or a list of either.
    valid_pattern, invalid_pattern : str
        Output names with one ``*``, replaced by each input's stem:
        ``'out/valid-*.csv'``. For Parquet inputs, two dataset directories
        (no ``*``), see :func:`filter_parquet`.
    scheduler : None, 'synchronous', str address or distributed.Client
        Where the tasks run; see the module docstring.
    n_workers : int, optional
        Workers of the local cluster started when ``scheduler`` is None.
    delimiter, encoding, chunk_rows, na_values, device, fdr, full_k :
        As the CLI's options (``na_values``, ``device`` and ``drift_alpha`` reach ``file_task`` only when
        not the default). ``fdr``: Benjamini-Hochberg per file (each file's p-values on their own); Parquet
        inputs refuse it.
    drift_alpha : float or None, default 0.01
        Level of each batch's drift alarm; None skips the test.
    summary_json : str, optional
        Write ``{"files": summaries}`` there as JSON once every file is filtered
        (not when one failed); it may not name the model, an input or an output.
    torch_threads : int, optional
        Torch intra-op threads per task; defaults to cores // n_workers on a
        local cluster and to the worker's setting elsewhere.
    retries : int, default 0
        Reruns of a task that raised. (A task whose worker *died* is rerun by
        Dask in any case, up to ``distributed.scheduler.allowed-failures``.)
    file_task : callable, optional
        The per-file function, called as ``file_task(model_path, input,
        valid, invalid, **options)``; default :func:`filter_file`. A wrapper
        can add logging or fault injection.

    Returns
    -------
    summaries : list of dict
        Per input file, in input order: ``input``, ``valid``, ``invalid``,
        ``n_valid``, ``n_invalid``, ``drift`` (and ``summary``, see :func:`filter_file`).

    Raises
    ------
    FilterFilesError
        When any file failed; the other files' outputs are written and
        listed in ``.results``.
    """
    files = expand_inputs(inputs)
    if not files:
        raise ValueError("no input files")
    if all(f.endswith(".parquet") for f in files):
        if fdr is not None:
            raise ValueError("--fdr is for CSV inputs (Benjamini-Hochberg per file, two passes); Parquet inputs "
                             "are filtered by the model's band only")
        if summary_json is not None:
            check_paths(inputs={"--model": model_path, **{f"input {f}": f for f in files}},
                        outputs={"--valid": valid_pattern, "--invalid": invalid_pattern,
                                 "--summary-json": summary_json})
            created = {os.path.dirname(os.path.abspath(p)) for p in (valid_pattern, invalid_pattern)}
            if os.path.dirname(os.path.abspath(summary_json)) not in created:  # filter_parquet makes those
                check_output_directory("--summary-json", summary_json)
        results = [filter_parquet(model_path, files, valid_pattern, invalid_pattern, scheduler, n_workers=n_workers,
                                  drift_alpha=drift_alpha)]
        if summary_json is not None:
            write_summary_json({"files": results}, summary_json)
        return results
    if any(f.endswith(".parquet") for f in files):
        raise ValueError("inputs mix Parquet and CSV files; filter them in separate runs")
    if "-" in files:
        raise ValueError("stdin ('-') cannot be one of many inputs")
    jobs = _plan(files, valid_pattern, invalid_pattern, model_path)
    if file_task is None and _runs_on_this_machine(scheduler):
        _check_model(model_path)
    _make_output_folders(jobs)
    if summary_json is not None:
        check_paths(inputs={"--model": model_path, **{f"input {f}": f for f in files}},
                    outputs={**{f"output {out}": out for job in jobs for out in job[1:]},
                             "--summary-json": summary_json})
        check_output_directory("--summary-json", summary_json)
    fn = file_task or filter_file
    try:
        with _runner(scheduler, len(jobs), n_workers) as runner:
            kwargs = dict(delimiter=delimiter, encoding=encoding, chunk_rows=chunk_rows,
                          torch_threads=torch_threads or runner.torch_threads)
            if na_values:
                kwargs["na_values"] = tuple(na_values)
            if device != "auto":
                kwargs["device"] = device
            if drift_alpha != DEFAULT_ALPHA:
                kwargs["drift_alpha"] = drift_alpha
            if fdr is not None:
                kwargs["fdr"] = fdr
            if full_k:
                kwargs["full_k"] = True
            outcomes = _run_tasks(runner, fn, [(model_path, *job) for job in jobs], kwargs, retries)
    except BaseException:
        # interrupted (Ctrl-C, SIGTERM): workers killed mid-file cannot remove their temporary files
        _remove_temporary_outputs(jobs)
        raise
    _remove_temporary_outputs(jobs)
    results = [value for status, value in outcomes if status == "ok"]
    failures = {job[0]: value for job, (status, value) in zip(jobs, outcomes) if status == "error"}
    if failures:
        raise FilterFilesError(failures, results)
    if summary_json is not None:
        write_summary_json({"files": results}, summary_json)
    return results


def _runs_on_this_machine(scheduler):
    """Whether the tasks read files from this machine's disk (in-process, or a local cluster started here)."""
    return scheduler == "synchronous" or (scheduler is None and _current_client() is None)


def _check_model(model_path):
    """Read the model once here: a missing or broken file would fail every input with the same error,
    after their output folders were made (a remote cluster's workers may see another disk: not checked)."""
    from .persistence import load_model

    load_model(model_path)


def _remove_temporary_outputs(jobs):
    """Delete the hidden temporary files of the planned outputs (a killed worker cannot)."""
    for _, valid, invalid in jobs:
        for out in (valid, invalid):
            remove_temporaries(out)


# ---------------------------------------------------------------- Parquet
def _annotate_partition(partition, detector, names, band, torch_threads=None):
    scores = _score_partition(partition, detector, names, torch_threads)
    out = partition.copy()
    out["log_px"] = scores["log_px"].to_numpy()
    out["band_lower"], out["band_upper"] = band
    out["reason"] = scores["reason"].astype(str)
    out["p_value"] = band_pvalues(scores["log_px"].to_numpy(), detector.validation_scores_, detector.thresholds_)
    out["_vaefilter_is_valid"] = scores["is_valid"].to_numpy()
    return out


def filter_parquet(model_path, inputs, valid_path, invalid_path, scheduler=None, *, n_workers=None,
                   torch_threads=None, drift_alpha=DEFAULT_ALPHA):
    """Split Parquet files into a valid and a rejected Parquet dataset (directories).

    Every input row ends up in exactly one output. Valid rows keep their
    columns and index; rejected rows gain ``log_px``, ``band_lower``,
    ``band_upper`` (float, NaN for an open side), ``reason`` and ``p_value``. Both datasets
    are written to hidden temporary directories and renamed into place once
    complete; scoring is computed once for both.

    Returns
    -------
    summary : dict
        ``input`` (the file list), ``valid``, ``invalid``, ``n_valid``, ``n_invalid``, ``drift``: the
        datasets' rows as one batch, tested on log p(x) only (columns not tested; None with
        ``drift_alpha=None``).
    """
    dd = _dd()
    import dask

    from .persistence import load_model

    for path in (valid_path, invalid_path):
        if "*" in os.fspath(path):
            raise ValueError(f"{path}: a Parquet output is one dataset directory; drop the '*'")
    if os.path.abspath(valid_path) == os.path.abspath(invalid_path):
        raise ValueError(f"{valid_path}: the valid and invalid outputs are the same")
    files = expand_inputs(inputs)
    detector = load_model(model_path)
    ddf = dd.read_parquet(files)
    clash = [c for c in _PARQUET_REJECT_FIELDS if c in ddf.columns]
    if clash:
        raise ValueError(f"the input already has column(s) {clash}, which the rejected rows would gain")
    names = _model_columns(detector, ddf.columns)
    band = tuple(np.nan if t is None else float(t) for t in detector.thresholds_)
    columns = list(ddf.columns)
    with _runner(scheduler, ddf.npartitions, n_workers) as runner:
        threads = torch_threads or runner.torch_threads
        shipped = _ship(detector, runner.client) if runner.client is not None else _ship_delayed(detector)
        meta = ddf._meta.copy()
        for name, dtype in [("log_px", "float64"), ("band_lower", "float64"), ("band_upper", "float64"),
                            ("reason", str), ("p_value", "float64"), ("_vaefilter_is_valid", "bool")]:
            meta[name] = pd.Series(dtype=dtype)
        annotated = ddf.map_partitions(_annotate_partition, shipped, names, band, threads, meta=meta,
                                       enforce_metadata=False)
        keep = annotated["_vaefilter_is_valid"]
        valid = annotated[keep][columns]
        invalid = annotated[~keep][columns + _PARQUET_REJECT_FIELDS]
        for path in (valid_path, invalid_path):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_directories([valid_path, invalid_path]) as (tmp_valid, tmp_invalid):
            writes = [valid.to_parquet(tmp_valid, compute=False), invalid.to_parquet(tmp_invalid, compute=False)]
            scheduler_kw = {} if runner.client is not None else {"scheduler": "sync"}
            # log p(x) of every row (8 bytes a row) in the same compute: scored once
            _, _, n_valid, n_rows, log_px = dask.compute(*writes, keep.sum(), keep.size, annotated["log_px"],
                                                         **scheduler_kw)
    drift = None
    if drift_alpha is not None:
        drift = batch_drift(np.asarray(log_px, dtype=float), detector.validation_scores_, detector.thresholds_,
                            alpha=drift_alpha).to_dict()
    return {"input": files, "valid": os.fspath(valid_path), "invalid": os.fspath(invalid_path),
            "n_valid": int(n_valid), "n_invalid": int(n_rows - n_valid), "drift": drift}


def _ship_delayed(detector):
    dask = import_optional("dask", extra="dask", purpose=_PURPOSE)
    return dask.delayed(detector, pure=True, traverse=False)
