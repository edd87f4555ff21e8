"""The one filtering path: CSV files in, scored or split CSV files out, a summary back.

The command line (:mod:`vaefilter.cli`) parses its arguments and calls these
functions; :func:`vaefilter.dask.filter_file` calls :func:`filter_csv` once per
file. Every function takes paths or binary streams and plain options (never an
``argparse.Namespace``) and returns a summary dataclass.

* :func:`fit_csv`: trusted CSV files -> a fitted detector (and a model file).
* :func:`score_csv`: every record with ``log_px``, ``is_valid`` and ``reason`` appended.
* :func:`filter_csv`: valid records byte for byte into one output, rejected
  records with ``log_px``, the band, a reason and the conformal p-value into
  the other; both outputs appear together or not at all. With ``fdr``, rows
  are rejected by Benjamini-Hochberg over the file's p-values (two passes).
* :func:`report_csv`: the HTML report of a model and, optionally, a scored batch.

Rows that cannot be parsed or scored never stop a run: they are rejected with
a reason naming their line and column. Errors about the run itself (a missing
column, a model file that cannot be read, a device this machine lacks) raise.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import queue
import shutil
import stat
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from .band import band_pvalues, benjamini_hochberg, conformal_band
from .io.csvio import AtomicOutputs, CsvReader, append_fields, standard_input
from ._torch import resolve_device
from .drift import DEFAULT_ALPHA, batch_drift
from .explanations import format_value
from .persistence import load_model, model_bytes
from .io.texttypes import infer_text_table, odd_cells, parse_text_table, quote_cell

__all__ = [
    "MAX_REASON_CHARS",
    "REJECT_FIELDS",
    "SCORE_FIELDS",
    "FDR_FIELDS",
    "FitSummary",
    "RunSummary",
    "check_paths",
    "chunk_results",
    "file_id",
    "filter_csv",
    "filter_csv_fdr",
    "fit_csv",
    "load_detector",
    "report_csv",
    "score_csv",
    "score_table",
    "write_summary_json",
    "error_text",
    "check_output_directory",
]

#: the fields ``score`` appends to every record
SCORE_FIELDS = ["log_px", "is_valid", "reason", "p_value"]
#: the fields ``filter`` appends to every rejected record; ``n_draws`` is the
#: number of importance draws behind ``log_px`` (fewer than K where the row's
#: decision was clear early, see :mod:`vaefilter.scoring.sequential`)
REJECT_FIELDS = ["log_px", "band_lower", "band_upper", "reason", "p_value", "n_draws"]
#: the field ``filter --fdr`` appends after those: the file's Benjamini-Hochberg cut
FDR_FIELDS = ["bh_cut"]
#: the longest reason written to an output; longer ones are cut
MAX_REASON_CHARS = 1000

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NOT_FINITE = "log p(x) is not finite"
#: Batch rows whose columns the drift test compares (a fixed sample, whatever
#: the batch's size): scoring them per column again costs what scoring 2000
#: rows costs (bench_drift measures it), and against 1000 calibration rows a
#: quarter-standard-deviation median shift of a column is found at 0.01/64.
DRIFT_SAMPLE_ROWS = 2000


@dataclass
class RunSummary:
    """What a :func:`score_csv`, :func:`filter_csv` or :func:`report_csv` run did.

    Attributes
    ----------
    input : str
        The input's name (path, ``'<stdin>'`` or the stream's name).
    outputs : dict of str to str
        The outputs written, by role (``'scored'``, ``'valid'``, ``'invalid'``, ``'report'``).
    n_rows : int
        Data records read.
    n_valid, n_rejected : int
        Records inside and outside the band (``n_rejected`` includes ``n_unscored``).
    n_unscored : int
        Records rejected without a log p(x): unparseable records, cells that do
        not fit the model's columns, values the model cannot score.
    first_unscored : str or None
        The reason of the first of those, for a message.
    seconds : float
        Wall time of the run.
    seconds_scoring : float
        Of which parsing the cells and computing the scores.
    band : list of (float or None) or None
        The model's band ``[lower, upper]`` of log p(x), nats.
    drift : vaefilter.drift.DriftReport or None
        ``filter``'s test of the batch (the input) against the calibration
        rows; None when not tested.
    seconds_drift : float
        Of ``seconds``, the drift test (the per-column scoring of its sample).
    """

    input: str
    outputs: dict = field(default_factory=dict)
    n_rows: int = 0
    n_valid: int = 0
    n_rejected: int = 0
    n_unscored: int = 0
    first_unscored: str | None = None
    seconds: float = 0.0
    seconds_scoring: float = 0.0
    band: list | None = None
    drift: object = None
    seconds_drift: float = 0.0

    def to_dict(self):
        """The summary as plain JSON-able values (the drift report nested)."""
        return asdict(self)

    def _count(self, log_px, is_valid, reasons):
        self.n_rows += len(is_valid)
        self.n_valid += int(is_valid.sum())
        self.n_rejected += int((~is_valid).sum())
        unscored = np.flatnonzero(np.isnan(log_px))
        if len(unscored) and self.first_unscored is None:
            self.first_unscored = reasons[unscored[0]]
        self.n_unscored += len(unscored)


@dataclass
class FitSummary:
    """What :func:`fit_csv` did: the fitted detector, the rows it learned from, the model file."""

    detector: object
    n_rows: int
    output: str | None
    seconds: float = 0.0
    #: (file, line) of each training row that ``trim_fraction`` set aside
    set_aside: list = field(default_factory=list)


# ------------------------------------------------------------------ paths
def input_stem(path):
    """An input file's name without its folder and extension: 'in/2024-01.csv' -> '2024-01'."""
    return os.path.splitext(os.path.basename(os.fspath(path)))[0]


def output_path(pattern, input_path):
    """``pattern`` with its one '*' replaced by the input file's stem: 'out/valid-*.csv', 'in/a.csv' -> 'out/valid-a.csv'."""
    pattern = os.fspath(pattern)
    if pattern.count("*") != 1:
        raise ValueError(f"output pattern {pattern!r} must contain exactly one '*' (replaced by each input file's stem)")
    return pattern.replace("*", input_stem(input_path))


def file_id(path):
    """(device, inode) of an existing file, else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def error_text(exc):
    """What went wrong, for a person: an OSError names its file first, like other messages,
    and the errors this package raises on bad input carry no class name; anything else
    (a bug, a worker's crash) keeps it."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, (ValueError, RuntimeError)) and str(exc):  # RuntimeError: 'the input changed ...'
        return str(exc)
    return f"{type(exc).__name__}: {exc}"  # a KeyError's text is only its key


def _stdout_id():
    """((device, inode) of the file or pipe standard output is, whether it is a regular file), or
    (None, False) for a terminal or /dev/null (character devices), which other outputs may share
    without overwriting anything."""
    try:
        st = os.fstat(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # replaced by an object without a descriptor
        return None, False
    if stat.S_ISCHR(st.st_mode):
        return None, False
    return (st.st_dev, st.st_ino), stat.S_ISREG(st.st_mode)


def _stdin_file_id():
    """(device, inode) of the regular file standard input is redirected from ('< a.csv'), else None:
    'filter - --valid a.csv < a.csv' replaced a.csv with its own valid rows. A pipe cannot be traced
    to a file."""
    try:
        st = os.fstat(sys.stdin.fileno())
    except (AttributeError, OSError, ValueError):  # closed, or replaced by an object without a descriptor
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def _is_path(target):
    return isinstance(target, (str, os.PathLike))


def _file_keys(path):
    """What identifies a file named by ``path``: its real path and (device, inode); '-' for stdin."""
    return {"-"} if os.fspath(path) == "-" else {os.path.realpath(path), file_id(path)} - {None}


def check_paths(inputs, outputs):
    """Refuse outputs that would overwrite each other, an input or the model.

    ``inputs`` and ``outputs`` map a description (``'--model'``) to a path.
    Compared by resolved path and, for files that exist, by device and inode
    (symbolic and hard links). ``-`` is stdin for inputs (and, redirected
    from a file, that file) and stdout for outputs; streams and None are
    not checked. An output ``-`` is also the
    file or pipe stdout is, compared with the other outputs only: '--valid
    /dev/stdout --invalid -', or '--valid o.csv --invalid - > o.csv', wrote
    both outputs into one file, one over the other.
    """
    for what, path in {**inputs, **outputs}.items():
        if _is_path(path) and os.fspath(path) == "":
            raise ValueError(f"{what}: an empty path (give a file name, or '-')")
    seen = {}  # key -> what, of inputs and outputs
    stdin = _stdin_file_id()
    for what, path in inputs.items():
        if _is_path(path) and os.fspath(path) == "-" and stdin is not None:
            seen.setdefault(stdin, f"{what} (standard input)")
        if not _is_path(path) or os.fspath(path) == "-":
            continue
        for key in _file_keys(path):
            seen.setdefault(key, what)
    written = {}  # key -> what, of outputs only
    stdout, stdout_is_file = _stdout_id()
    for what, path in outputs.items():
        if not _is_path(path):
            continue
        path = os.fspath(path)
        # stdout redirected onto an input ('score a.csv -o - > a.csv') overwrites it; a pipe or
        # socket that is also stdin ('/dev/stdin') is compared with the other outputs only
        keys = ["-", stdout] if path == "-" and stdout_is_file else (
            ["-"] if path == "-" else [os.path.realpath(path), file_id(path)])
        among_outputs = [stdout] if path == "-" else keys
        clashes = [(seen[k], k) for k in keys if k is not None and k in seen]
        clashes += [(written[k], k) for k in among_outputs if k is not None and k in written]
        if clashes:
            other, key = clashes[0]
            name = "stdout" if path == "-" or key == stdout else repr(path)
            raise ValueError(f"{other} and {what} both name {name}; each output needs its own file, "
                             "apart from the inputs and the model")
        for key in keys:
            if key is not None:
                seen[key] = what
        for key in among_outputs:
            if key is not None:
                written[key] = what


def check_output_directory(what, path):
    """An output written at the end of a run needs its directory now: a --summary-json into a
    missing one failed only after both CSV outputs had been replaced."""
    if path is None or not _is_path(path) or os.fspath(path) == "-":
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"{what} {os.fspath(path)!r}: its directory {directory!r} does not exist")


@contextlib.contextmanager
def _outputs(targets):
    """Binary files for ``targets``: paths (``'-'``: stdout) written atomically together, streams as they are."""
    paths = [t for t in targets if _is_path(t)]
    with AtomicOutputs(paths) as files:
        opened = iter(files)
        yield [next(opened) if _is_path(t) else t for t in targets]


def _name(target):
    return os.fspath(target) if _is_path(target) else str(getattr(target, "name", "<stream>"))


# ------------------------------------------------------------------ model
def load_detector(model, device="auto"):
    """A fitted detector from a model file (or the detector given), computing on ``device``.

    A device this machine lacks raises here, before any row is read.
    """
    detector = load_model(model) if _is_path(model) else model
    resolve_device(device)
    detector.set_params(device=device)
    return detector


def _prepare(model, input, device, outputs):
    """Refuse outputs that would overwrite the input, the model or each other, then load the model:
    (start time, detector)."""
    started = time.perf_counter()
    check_paths(inputs={"the input": input, "--model": model}, outputs=outputs)
    check_output_directory("--summary-json", outputs.get("--summary-json"))
    return started, load_detector(model, device)


@contextlib.contextmanager
def _long_lived_objects_frozen():
    """The objects alive before a run (modules, the model, torch's and pandas' own) out of the
    garbage collector's reach while it runs (:func:`gc.freeze`), put back afterwards.

    A pass creates many short-lived objects (a reason per rejected row), and
    each full collection walked the ~250,000 objects the imports leave behind:
    on 30,000 titanic rows that took explain_rows from 0.09 s to 0.28 s, and
    the filter 3-7% longer (4.39-4.60 s against 4.27-4.30 s, 1 thread).
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _open_input(source, detector, chunk_rows, encoding, delimiter, name=None):
    reader = CsvReader(source, chunk_rows=chunk_rows, encoding=encoding, delimiter=delimiter, name=name)
    missing = [n for n in detector.schema_.names if n not in reader.columns]
    if missing:
        reader.close()
        raise ValueError(f"{reader.name}: line 1: the header lacks column(s) the model needs: {missing}")
    return reader


# ---------------------------------------------------------------- scoring
def _unscorable_cells(detector, typed):
    """{position: reason} for rows the model cannot score, found on the whole table at once:
    a value beyond float32 or infinite, or missing where the model refuses missing cells."""
    matrix = detector.schema_.encode(typed)
    bad = np.isinf(matrix) | (np.abs(np.nan_to_num(matrix)) > _FLOAT32_MAX)
    if getattr(detector, "handle_missing", "model") == "error":
        bad |= np.isnan(matrix)
    reasons = {}
    names = detector.schema_.names
    for row, col in np.argwhere(bad):
        if row not in reasons:
            value = typed.iloc[row, col]
            what = ("is missing, and this model refuses missing cells" if np.isnan(matrix[row, col])
                    else "is too large to score (beyond float32)")
            reasons[int(row)] = f"column {names[col]!r}: {quote_cell(value)} {what}"
    return reasons


def _explain(detector, frame, sequential=False):
    """explain() without scikit-learn's feature-name warning for models fitted on unnamed or
    integer-named columns (the CSV header gives the columns names)."""
    return _on_typed(detector.explain, detector, frame, sequential=sequential)


def _on_typed(method, detector, frame, **kwargs):
    """A detector method on typed CSV rows, as a matrix for models fitted on one."""
    if not hasattr(detector, "feature_names_in_") and detector.schema_.is_numeric_only:
        return method(frame.to_numpy(dtype=np.float64), **kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X has feature names", category=UserWarning)
        return method(frame, **kwargs)


def _row_priorities(ordinals):
    """A fixed pseudo-random uint64 per record number (splitmix64's finaliser): the drift
    sample is the records of smallest priority, the same whatever the chunking."""
    z = ordinals.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class _DriftBatch:
    """What the drift test needs of a batch, gathered chunk by chunk: every scored row's log p(x)
    (8 bytes a row) and a bounded sample of typed rows (at most ``max_rows``) for the columns."""

    def __init__(self, max_rows=None):
        self.max_rows = DRIFT_SAMPLE_ROWS if max_rows is None else max_rows
        self.scores, self.n_records = [], 0
        self.keys, self.rows = np.empty(0, dtype=np.uint64), None

    def add(self, log_px, typed, problems):
        ordinals = self.n_records + np.arange(len(log_px))
        self.n_records += len(log_px)
        self.scores.append(log_px[~np.isnan(log_px)])
        # the index holds positions into the chunk (CsvChunk.frame)
        positions = typed.index.to_numpy()
        keep = ~np.isnan(log_px[positions]) & ~np.isin(positions, np.fromiter(problems, dtype=np.int64,
                                                                               count=len(problems)))
        scored = positions[keep]
        if not len(scored):
            return
        keys = np.concatenate([self.keys, _row_priorities(ordinals[scored])])
        rows = typed.loc[scored] if self.rows is None else pd.concat([self.rows, typed.loc[scored]])
        keep = np.argsort(keys, kind="stable")[: self.max_rows]
        self.keys, self.rows = keys[keep], rows.iloc[keep]

    def report(self, detector, alpha):
        scores = np.concatenate(self.scores) if self.scores else np.empty(0)
        if self.rows is None:
            return batch_drift(scores, detector.validation_scores_, detector.thresholds_, alpha=alpha)
        return _on_typed(detector.drift_report, detector, self.rows.reset_index(drop=True), log_px=scores,
                         alpha=alpha)


def _explain_splitting(detector, typed, reasons, parts=8, sequential=False):
    """explain() of a table; where log p(x) overflows, the failing parts are split (``parts``
    ways) until the rows that overflow are found, each getting a reason; other errors raise."""
    try:
        explained = _explain(detector, typed, sequential=True) if sequential else _explain(detector, typed)
        if "n_draws" not in explained.columns or not sequential:
            explained = explained.assign(n_draws=detector.n_importance_samples)
        return [explained[[*SCORE_FIELDS, "n_draws"]]]
    except ValueError as exc:
        if not str(exc).startswith(_NOT_FINITE):
            raise
        if len(typed) == 1:
            label = typed.index[0]
            numbers = typed.iloc[0].apply(lambda v: abs(v) if isinstance(v, (int, float, np.number)) else np.nan)
            largest = numbers.astype(float).idxmax() if numbers.notna().any() else None
            where = "" if largest is None else f"; its largest value is {largest}={format_value(float(typed.iloc[0][largest]))}"
            reasons[label] = (f"{_NOT_FINITE}: the likelihood overflowed on a value far outside the training "
                              f"range{where}")
            return []
    out = []
    for piece in np.array_split(np.arange(len(typed)), min(parts, len(typed))):
        if len(piece):
            out.extend(_explain_splitting(detector, typed.iloc[piece], reasons, parts, sequential))
    return out


def score_table(detector, typed, sequential=False):
    """log_px, is_valid, reason, n_draws of typed rows (a DataFrame of unique labels), in one vectorised pass.

    With ``sequential``, rows are decided as ``predict`` decides them (see
    ``VAEOutlierDetector.sequential_decisions``); ``n_draws`` is then the
    number of importance draws behind each row's ``log_px``.

    Rows the model cannot score (a value beyond float32, a missing cell a model
    fitted with handle_missing='error' refuses, a log p(x) that overflows) are
    invalid with that reason; any other error is about the model or the machine,
    not a row, and raises.
    """
    if typed.empty:
        return pd.DataFrame(columns=[*SCORE_FIELDS, "n_draws"])
    unscorable = _unscorable_cells(detector, typed.reset_index(drop=True))
    reasons = {typed.index[k]: r for k, r in unscorable.items()}
    rest = typed.drop(index=list(reasons)) if reasons else typed
    parts = _explain_splitting(detector, rest, reasons, sequential=sequential) if len(rest) else []
    failed = pd.DataFrame({"log_px": np.nan, "is_valid": False, "reason": list(reasons.values()),
                           "p_value": np.nan, "n_draws": 0}, index=list(reasons.keys()))
    frames = [f for f in [*parts, failed] if len(f)]
    if not frames:
        return pd.DataFrame(columns=[*SCORE_FIELDS, "n_draws"])
    return pd.concat(frames).reindex(typed.index)


def _cut(reason):
    """A reason of at most MAX_REASON_CHARS characters."""
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    return reason[:MAX_REASON_CHARS] + f"... ({len(reason)} characters, cut)"


def _score_chunk(detector, chunk, source, na_values=(), sequential=False):
    """(log_px, is_valid, reasons, typed rows, {position: typing problem}, n_draws) of a chunk's records."""
    n = len(chunk.records)
    log_px = np.full(n, np.nan)
    n_draws = np.zeros(n, dtype=np.int64)
    is_valid = np.zeros(n, dtype=bool)
    reasons = [""] * n
    for position, problem in chunk.errors.items():
        reasons[position] = f"unparseable: {problem}"
    typed, problems = parse_text_table(chunk.frame, detector.schema_, source=source, na_values=na_values)
    for position, problem in problems.items():
        reasons[position] = f"line {chunk.line_numbers[position]}: {problem}"
    scored = score_table(detector, typed.drop(index=list(problems)), sequential)
    positions = scored.index.to_numpy(dtype=int)
    n_draws[positions] = scored["n_draws"].to_numpy(dtype=np.int64)
    log_px[positions] = scored["log_px"].to_numpy(dtype=float)
    is_valid[positions] = scored["is_valid"].to_numpy(dtype=bool)
    for position, reason in zip(positions.tolist(), scored["reason"].tolist()):
        reasons[position] = reason
    for position in positions[~np.isfinite(log_px[positions])].tolist():
        if reasons[position].startswith(("column ", _NOT_FINITE)):
            reasons[position] = f"line {chunk.line_numbers[position]}: {reasons[position]}"
    return log_px, is_valid, [_cut(r) for r in reasons], typed, problems, n_draws


def chunk_results(detector, chunk, source, na_values=(), with_rows=False, sequential=False):
    """(log_px, is_valid, reasons) for every record of a :class:`~vaefilter.io.csvio.CsvChunk`, in record order.

    ``log_px`` is NaN for a record that could not be parsed or scored; its
    reason then starts with ``'unparseable:'`` or ``'line N:'``. With
    ``with_rows``, also the typed rows, {position: typing problem} and the
    importance draws behind each ``log_px`` (0 for a record not scored; fewer
    than K under ``sequential``, where rows are decided as ``predict`` decides).
    """
    results = _score_chunk(detector, chunk, source, na_values, sequential)
    return results if with_rows else results[:3]


def _progress(show):
    if not show or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(unit=" rows", unit_scale=True, file=sys.stderr, desc="vaefilter")


#: Chunks waiting between the reader thread and scoring, and between scoring
#: and the writer thread: parsing chunk i + 1, scoring chunk i and writing
#: chunk i - 1 overlap (torch and pandas' C parser release the GIL in their
#: heavy parts), and memory stays bounded to a few chunks.
QUEUE_CHUNKS = 2
_DONE = object()
_POLL_SECONDS = 0.1


class _Stage:
    """A thread running ``work(stage)`` beside the caller, with a bounded queue between them.

    ``put`` blocks while the queue is full and returns False once the stage
    is stopping or the other side is gone; ``get`` re-raises, in the
    caller's thread, an exception the stage's thread raised.
    """

    def __init__(self, work, name, produces):
        self.queue = queue.Queue(maxsize=QUEUE_CHUNKS)
        self.stopping = threading.Event()
        self.error = None
        self._work, self._produces = work, produces
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self._work(self)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            self.error = exc
        finally:
            if self._produces:
                self.put(_DONE)

    def put(self, item):
        in_thread = threading.current_thread() is self.thread
        while not self.stopping.is_set() and (in_thread or self.thread.is_alive()):
            try:
                self.queue.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def get(self):
        """The next item, or _DONE; None from a consumer's side when it is told to stop."""
        in_thread = threading.current_thread() is self.thread
        while True:
            try:
                item = self.queue.get(timeout=_POLL_SECONDS)
                break
            except queue.Empty:
                if in_thread and self.stopping.is_set():
                    return _DONE
                if not in_thread and not self.thread.is_alive() and self.queue.empty():
                    item = _DONE
                    break
        if item is _DONE and self.error is not None and not in_thread:
            raise self.error
        return item

    def stop(self):
        """Tell the thread to stop and wait for it."""
        self.stopping.set()
        while self.thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self.queue.get(timeout=_POLL_SECONDS)
        self.thread.join()


def _read_ahead(reader):
    """The reader's chunks, parsed in a thread up to QUEUE_CHUNKS ahead."""

    def work(stage):
        for chunk in reader:
            if not stage.put(chunk):
                return

    stage = _Stage(work, "vaefilter-reader", produces=True)
    try:
        while (chunk := stage.get()) is not _DONE:
            yield chunk
    finally:
        stage.stop()


@contextlib.contextmanager
def _written_behind(write):
    """A function that hands its arguments to ``write`` in a writer thread, up to QUEUE_CHUNKS behind.

    Leaving the block waits for every write; an error in the writer raises
    in the caller (at the next hand-over or on leaving), so the outputs are
    not committed.
    """

    def work(stage):
        while (item := stage.get()) is not _DONE:
            write(*item)

    stage = _Stage(work, "vaefilter-writer", produces=False)

    def hand_over(*item):
        if not stage.put(item):
            raise stage.error or RuntimeError("the writer thread ended early")

    try:
        yield hand_over
    except BaseException:
        stage.stop()
        raise
    stage.put(_DONE)
    stage.thread.join()
    if stage.error is not None:
        raise stage.error


def _results(detector, reader, na_values, progress, summary, drift=None, sequential=False):
    """(chunk, log_px, is_valid, reasons, n_draws) per chunk, counted into ``summary`` (and ``drift``, a
    :class:`_DriftBatch`), with a progress bar in rows. Chunks are parsed ahead in a reader thread (see
    QUEUE_CHUNKS)."""
    bar = _progress(progress)
    chunks = _read_ahead(reader)
    try:
        for chunk in chunks:
            started = time.perf_counter()
            # positional: tests wrap chunk_results as a hook with (*args)
            log_px, is_valid, reasons, typed, problems, n_draws = chunk_results(
                detector, chunk, reader.name, na_values, True, sequential)
            if drift is not None:
                drift.add(log_px, typed, problems)
            summary.seconds_scoring += time.perf_counter() - started
            summary._count(log_px, is_valid, reasons)
            yield chunk, log_px, is_valid, reasons, n_draws
            if bar is not None:
                bar.update(len(chunk.records))
    finally:
        chunks.close()
        if bar is not None:
            bar.close()


def _number(value):
    return "" if np.isnan(value) else f"{value:.6f}"


def _pvalues(detector, log_px):
    """Conformal p-values of scores (NaN for unscored rows) against the detector's calibration rows."""
    return band_pvalues(log_px, detector.validation_scores_, detector.thresholds_)


def _pvalue_text(value):
    # p-values are multiples of 1/(n+1): 6 significant digits tell them apart up to n ~ 1e5
    return "" if np.isnan(value) else f"{value:.6g}"


def _appended_names(columns, names):
    """The names of the appended fields, prefixed with 'vaefilter_' where the input has them already."""
    taken = set(columns)
    out = []
    for name in names:
        while name in taken:
            name = f"vaefilter_{name}"
        taken.add(name)
        out.append(name)
    return out


def score_csv(model, input, output, *, delimiter=",", encoding="utf-8", chunk_rows=65536, na_values=(),
              device="auto", progress=False, sequential=False):
    """Write every record of ``input`` with ``log_px``, ``is_valid``, ``reason`` and ``p_value`` appended.

    ``p_value`` is the row's conformal p-value against the model's calibration
    rows (:meth:`~vaefilter.VAEOutlierDetector.pvalues`), empty for a row that
    could not be scored.

    Parameters
    ----------
    model : str, os.PathLike or fitted VAEOutlierDetector
        A model file or a fitted detector.
    input : str, os.PathLike or binary stream
        CSV input; ``'-'`` is stdin.
    output : str, os.PathLike or binary stream
        The scored CSV; ``'-'`` is stdout. A path appears complete or not at all.
    delimiter, encoding, chunk_rows, na_values, device :
        As the CLI's options.
    progress : bool, default False
        A progress bar on stderr when it is a terminal (needs tqdm).
    sequential : bool, default False
        Decide rows as ``filter`` does, stopping rows whose decision is clear
        early (see ``VAEOutlierDetector.sequential_decisions``): their
        ``log_px`` is then the estimate at fewer than K draws. By default
        every row gets K draws.

    Returns
    -------
    RunSummary
    """
    started, detector = _prepare(model, input, device, {"--output": output})
    csv = dict(encoding=encoding, delimiter=delimiter)
    with _long_lived_objects_frozen(), _open_input(input, detector, chunk_rows, encoding, delimiter) as reader, \
            _outputs([output]) as (out,):
        summary = RunSummary(reader.name, {"scored": _name(output)})
        csv["terminator"] = reader.line_terminator
        out.write(append_fields(reader.header, _appended_names(reader.columns, SCORE_FIELDS), **csv))

        def write(chunk, log_px, is_valid, reasons):
            out.write(b"".join(
                append_fields(record, [_number(s), "true" if v else "false", r, _pvalue_text(p)], **csv)
                for record, s, v, r, p in zip(chunk.records, log_px, is_valid, reasons, _pvalues(detector, log_px))
            ))

        with _written_behind(write) as hand_over:
            for chunk, log_px, is_valid, reasons, _ in _results(detector, reader, na_values, progress, summary,
                                                                sequential=sequential):
                hand_over(chunk, log_px, is_valid, reasons)
    summary.seconds = time.perf_counter() - started
    return summary


def filter_csv(model, input, valid, invalid, *, delimiter=",", encoding="utf-8", chunk_rows=65536, na_values=(),
               device="auto", progress=False, drift_alpha=DEFAULT_ALPHA, summary_json=None, fdr=None,
               full_k=False):
    """Split the records of ``input``: valid ones byte for byte into ``valid``, rejected ones into ``invalid``.

    Rejected records gain ``log_px``, ``band_lower``, ``band_upper``,
    ``reason``, ``p_value`` and ``n_draws``. Rows are decided sequentially (see
    ``VAEOutlierDetector.sequential_decisions``): a row whose decision is
    clear after a few of its K importance draws stops there, and its
    ``log_px`` is the estimate at the ``n_draws`` draws it used (K for rows
    that went the distance; 0 for rows not scored). ``full_k=True`` gives
    every row K draws. Parsing, scoring and writing run in three threads
    with QUEUE_CHUNKS chunks between them. Every record lands in exactly one output; both outputs (paths,
    ``'-'`` for stdout, or binary streams) are written to hidden temporary
    files and renamed into place together, so they appear complete or not at
    all. The input is one batch for the drift test
    (:meth:`~vaefilter.VAEOutlierDetector.drift_report`): every scored row's
    log p(x) and, for the columns, a fixed sample of at most
    :data:`DRIFT_SAMPLE_ROWS` rows (chosen by record number, whatever the
    chunking) scored per column after the pass. Other parameters as
    :func:`score_csv`.

    Parameters
    ----------
    drift_alpha : float or None, default 0.01
        Level of the drift alarm; None skips the test.
    summary_json : str or os.PathLike, optional
        Write :meth:`RunSummary.to_dict` there as JSON (atomically; ``'-'``:
        stdout) after the outputs; it may not name the model, the input or
        an output.
    fdr : float in (0, 1), optional
        Reject by Benjamini-Hochberg at false discovery rate ``fdr`` over this
        input's conformal p-values instead of by the model's band: see
        :func:`filter_csv_fdr` (every row at K draws there).
    full_k : bool, default False
        K importance draws for every row instead of sequential decisions.

    Returns
    -------
    RunSummary
    """
    if fdr is not None:
        return filter_csv_fdr(model, input, valid, invalid, fdr, delimiter=delimiter, encoding=encoding,
                              chunk_rows=chunk_rows, na_values=na_values, device=device, progress=progress,
                              drift_alpha=drift_alpha, summary_json=summary_json)
    started, detector = _prepare(model, input, device, {"--valid": valid, "--invalid": invalid,
                                                        "--summary-json": summary_json})
    drift = None if drift_alpha is None else _DriftBatch()
    band = ["" if t is None else f"{t:.6f}" for t in detector.thresholds_]
    csv = dict(encoding=encoding, delimiter=delimiter)
    with _long_lived_objects_frozen(), _open_input(input, detector, chunk_rows, encoding, delimiter) as reader, \
            _outputs(_with_summary([valid, invalid], summary_json)) as (valid_out, invalid_out, *summary_out):
        summary = RunSummary(reader.name, {"valid": _name(valid), "invalid": _name(invalid)})
        csv["terminator"] = reader.line_terminator
        valid_out.write(reader.header)
        invalid_out.write(append_fields(reader.header, _appended_names(reader.columns, REJECT_FIELDS), **csv))
        summary.band = list(detector.thresholds_)

        def write(chunk, log_px, is_valid, reasons, n_draws):
            valid_out.write(b"".join(record for record, v in zip(chunk.records, is_valid) if v))
            invalid_out.write(b"".join(
                append_fields(record, [_number(s), *band, reason, _pvalue_text(p), str(k)], **csv)
                for record, s, v, reason, p, k in zip(chunk.records, log_px, is_valid, reasons,
                                                      _pvalues(detector, log_px), n_draws) if not v
            ))

        with _written_behind(write) as hand_over:
            for chunk, log_px, is_valid, reasons, n_draws in _results(detector, reader, na_values, progress,
                                                                      summary, drift, sequential=not full_k):
                hand_over(chunk, log_px, is_valid, reasons, n_draws)
        return _finish_filter(summary, detector, drift, drift_alpha, started, summary_out)


def _with_summary(targets, summary_json):
    """The outputs of a filter run, with its --summary-json last when there is one: the three are
    written together (a --summary-json on a full disk failed after the CSV outputs were replaced)."""
    return targets if summary_json is None else [*targets, summary_json]


def _finish_filter(summary, detector, drift, drift_alpha, started, summary_out):
    """The batch's drift test, the run's time and the summary JSON (into ``summary_out``, a list of
    zero or one open file): the end of every filter run, before its outputs are committed."""
    if drift is not None:
        drift_started = time.perf_counter()
        summary.drift = drift.report(detector, drift_alpha)
        summary.seconds_drift = time.perf_counter() - drift_started
    summary.seconds = time.perf_counter() - started
    for out in summary_out:
        out.write(_summary_bytes(summary.to_dict()))
    return summary


def _summary_bytes(data):
    return (json.dumps(data, indent=2, allow_nan=False) + "\n").encode("utf-8")


def write_summary_json(data, path):
    """Write a summary (plain values) as JSON to ``path`` atomically (``'-'``: stdout)."""
    from .io.csvio import AtomicWriter

    with AtomicWriter(path) as out:
        out.write(_summary_bytes(data))


def _spooled_on_reading(input):
    """Whether ``input`` must be copied before it can be read twice: stdin, a stream, or a path
    that is not a regular file (a pipe, a FIFO, ``<(...)``, a device give their bytes once: a
    second open saw an empty pipe, or waited on a FIFO for ever). A missing path is not: its
    first open names it."""
    if not _is_path(input) or os.fspath(input) == "-":
        return True
    try:
        return not stat.S_ISREG(os.stat(input).st_mode)
    except OSError:
        return False


@contextlib.contextmanager
def _rereadable(input):
    """A path ``input`` can be read from twice: a regular file itself, anything else spooled to a
    temporary file (see :func:`_spooled_on_reading`)."""
    if not _spooled_on_reading(input):
        yield input
        return
    with contextlib.ExitStack() as stack:
        if not _is_path(input):
            source = input
        elif os.fspath(input) == "-":
            source = standard_input()
        else:
            source = stack.enter_context(open(input, "rb"))
        spool = stack.enter_context(tempfile.NamedTemporaryFile(prefix=".vaefilter-spool-", suffix=".csv"))
        shutil.copyfileobj(source, spool, 1 << 20)
        spool.flush()
        yield spool.name


def filter_csv_fdr(model, input, valid, invalid, fdr, *, delimiter=",", encoding="utf-8", chunk_rows=65536,
                   na_values=(), device="auto", progress=False, drift_alpha=DEFAULT_ALPHA, summary_json=None):
    """:func:`filter_csv` rejecting by Benjamini-Hochberg over the input's conformal p-values.

    Rejecting the rows with ``p_value <= bh_cut`` (the BH cut at level
    ``fdr`` of this input's p-values) keeps the expected share of valid rows
    among the rejected ones at most ``fdr``, when valid rows are exchangeable
    with the model's calibration rows (Bates et al., Ann. Statist. 2023; see
    :func:`vaefilter.band.benjamini_hochberg`). BH needs every p-value before
    the first row is routed, so the input is read twice: a first pass scores
    every record and keeps its log p(x) (8 bytes a row); a second pass routes
    them (stdin and streams are spooled to a temporary file first). Only the
    rejected rows are scored again, for their reasons.

    Rows that cannot be parsed or scored are rejected, as always, and take no
    part in BH. Rejected records gain ``log_px``, ``band_lower`` and
    ``band_upper`` (the band equivalent to the cut: rows outside it are those
    with ``p_value <= bh_cut``), ``reason``, ``p_value`` and ``bh_cut``. With
    no row rejected by BH the cut is 0.

    Returns
    -------
    RunSummary
    """
    started, detector = _prepare(model, input, device, {"--valid": valid, "--invalid": invalid,
                                                        "--summary-json": summary_json})
    if not (isinstance(fdr, (int, float)) and 0 < fdr < 1):
        raise ValueError(f"--fdr must be a number in (0, 1), got {fdr!r}")
    drift = None if drift_alpha is None else _DriftBatch()
    csv = dict(encoding=encoding, delimiter=delimiter)
    with _long_lived_objects_frozen(), _rereadable(input) as path:
        # pass 1: every record's score; reasons kept only for the unscored rows (rejected whatever BH says)
        spooled = path is not input
        name = ("<stdin>" if _is_path(input) and os.fspath(input) == "-" else _name(input)) if spooled else None
        first = RunSummary(name or _name(input))
        scores, unscored = [], {}
        with _open_input(path, detector, chunk_rows, encoding, delimiter, name) as reader:
            first.input = reader.name
            offset = 0
            header, digests = reader.header, []
            for chunk, log_px, _, reasons, _ in _results(detector, reader, na_values, progress, first, drift):
                digests.append(_records_digest(chunk))
                scores.append(log_px)
                unscored.update({offset + k: reasons[k] for k in np.flatnonzero(np.isnan(log_px))})
                offset += len(log_px)
        log_px_all = np.concatenate(scores) if scores else np.zeros(0)
        p_all = _pvalues(detector, log_px_all)
        cut = benjamini_hochberg(p_all, fdr)
        rejected_all = np.isnan(p_all) | (p_all <= cut)
        # the band whose outside is {p <= cut}: explains the rejected rows in the usual terms
        bh_detector = detector
        if cut > 0:
            sides = tuple(t is not None for t in detector.thresholds_)
            bh_detector = _with_band(detector, conformal_band(detector.validation_scores_, cut, sides))
        band = ["" if t is None else f"{t:.6f}" for t in bh_detector.thresholds_]
        cut_text = f"{cut:.6g}"
        k_text = str(detector.n_importance_samples)  # BH needs every p-value at full K
        # pass 2: route every record by its stored decision
        with _open_input(path, detector, chunk_rows, encoding, delimiter, name) as reader, \
                _outputs(_with_summary([valid, invalid], summary_json)) as (valid_out, invalid_out, *summary_out):
            summary = RunSummary(first.input, {"valid": _name(valid), "invalid": _name(invalid)})
            csv["terminator"] = reader.line_terminator
            valid_out.write(reader.header)
            invalid_out.write(append_fields(reader.header,
                                            _appended_names(reader.columns, REJECT_FIELDS + FDR_FIELDS), **csv))
            offset = 0
            for index, chunk in enumerate(reader):
                n = len(chunk.records)
                # the second pass routes by the first pass's decisions: only the same bytes may be routed
                if reader.header != header or index >= len(digests) or _records_digest(chunk) != digests[index]:
                    raise RuntimeError(f"{reader.name}: the input changed between the two passes (records "
                                       f"{offset + 1}-{offset + n} differ): they cannot be routed by the first pass's decisions")
                rows = slice(offset, offset + n)
                rejected, log_px, p = rejected_all[rows], log_px_all[rows], p_all[rows]
                reasons = _fdr_reasons(bh_detector, chunk, reader.name, na_values, rejected, log_px, p, cut,
                                       fdr, {k - offset: r for k, r in unscored.items() if offset <= k < offset + n})
                summary._count(log_px, ~rejected, reasons)
                valid_out.write(b"".join(record for record, r in zip(chunk.records, rejected) if not r))
                invalid_out.write(b"".join(
                    append_fields(record, [_number(s), *band, reason, _pvalue_text(q), "0" if np.isnan(s) else k_text,
                                           cut_text], **csv)
                    for record, r, s, reason, q in zip(chunk.records, rejected, log_px, reasons, p) if r
                ))
                offset += n
            if offset != len(log_px_all):
                raise RuntimeError(f"{reader.name}: the input changed between the two passes "
                                   f"({len(log_px_all)} then {offset} records)")
            summary.seconds_scoring = first.seconds_scoring
            summary.band = list(bh_detector.thresholds_)
            return _finish_filter(summary, detector, drift, drift_alpha, started, summary_out)


def _records_digest(chunk):
    """A fingerprint of a chunk's record bytes (BLAKE2b, 16 bytes; about 1 GB/s)."""
    digest = hashlib.blake2b(digest_size=16)
    for record in chunk.records:
        digest.update(record)
    return digest.digest()


def _with_band(detector, thresholds):
    """A shallow copy of ``detector`` with another band (the network is shared, not copied)."""
    import copy

    other = copy.copy(detector)
    other.thresholds_ = thresholds
    return other


def _fdr_reasons(bh_detector, chunk, source, na_values, rejected, log_px, p, cut, fdr, unscored):
    """Reasons of a chunk's records under ``filter --fdr``: '' for kept rows, the first pass's reason for
    unscored ones, and for rows BH rejects the p-value, the cut and the columns (explain, against the
    band equivalent to the cut)."""
    reasons = [""] * len(chunk.records)
    for k, reason in unscored.items():
        reasons[k] = reason
    scored_rejected = np.flatnonzero(rejected & ~np.isnan(log_px))
    if not len(scored_rejected):
        return reasons
    detail = {}
    keep = set(scored_rejected.tolist())
    typed, problems = parse_text_table(chunk.frame, bh_detector.schema_, source=source, na_values=na_values)
    wanted = [k for k in typed.index if k in keep and k not in problems]
    if wanted:
        explained = score_table(bh_detector, typed.loc[wanted])
        detail = dict(zip(explained.index, explained["reason"]))
    for k in scored_rejected:
        head = f"p-value {p[k]:.3g} <= Benjamini-Hochberg cut {cut:.3g} at fdr {fdr:g}"
        more = detail.get(k, "")
        reasons[k] = _cut(f"{head}: {more}" if more else head)
    return reasons


def report_csv(model, output, input=None, *, delimiter=",", encoding="utf-8", chunk_rows=65536, na_values=(),
               device="auto"):
    """Write the HTML report of a model and, when ``input`` is given, of that CSV batch.

    Records that cannot be parsed or scored are left out of the batch's
    figures; the report's title and the summary (``n_unscored``,
    ``first_unscored``) say how many. Parameters as :func:`score_csv`.

    Returns
    -------
    RunSummary
    """
    from .report import write_report

    started, detector = _prepare(model, input, device, {"--output": output})
    batch, title = None, "vaefilter report"
    summary = RunSummary("" if input is None else _name(input), {"report": _name(output)})
    if input is not None:
        frames = []
        with _open_input(input, detector, chunk_rows, encoding, delimiter) as reader:
            summary.input = reader.name
            for chunk in reader:
                log_px, is_valid, reasons, typed, problems, _ = _score_chunk(detector, chunk, reader.name, na_values)
                summary._count(log_px, is_valid, reasons)
                scored = [k for k in typed.index if k not in problems and not np.isnan(log_px[k])]
                frames.append(typed.loc[scored])
        summary.seconds_scoring = time.perf_counter() - started
        batch = pd.concat(frames, ignore_index=True) if frames else None
        if batch is not None and batch.empty:
            batch = None  # no row could be scored: the report of the model, titled with why
        if summary.n_unscored:
            title = (f"vaefilter report: {summary.input}, {summary.n_rows - summary.n_unscored} of "
                     f"{summary.n_rows} rows scored; {summary.n_unscored} could not be parsed or scored "
                     f"(first: {summary.first_unscored})")
    write_report(detector, output, batch=batch, title=title)
    summary.seconds = time.perf_counter() - started
    return summary


# -------------------------------------------------------------------- fit
def _read_whole(path, chunk_rows, encoding, delimiter):
    """A trusted file as text: a malformed line is an error, not a rejection.

    Returns the cell texts and, per row, its ``(file, line)``.
    """
    frames, places = [], []
    with CsvReader(path, chunk_rows=chunk_rows, encoding=encoding, delimiter=delimiter) as reader:
        for chunk in reader:
            if chunk.errors:
                position = min(chunk.errors)
                raise ValueError(f"{reader.name}: {chunk.errors[position]} (training files must parse completely)")
            frames.append(chunk.frame)
            places.extend((reader.name, int(line)) for line in chunk.line_numbers)
        columns = reader.columns
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return frame, places


def _select_columns(frame, columns, exclude, categorical, path):
    names = list(frame.columns)
    chosen = columns or [n for n in names if n not in set(exclude or [])]
    unknown = [n for n in [*(columns or []), *(exclude or []), *categorical] if n not in names]
    if unknown:
        raise ValueError(f"{path}: line 1: no column named {unknown[0]!r} (columns: {names})")
    if not chosen:
        raise ValueError(f"{path}: line 1: --exclude names every column ({names}); no column is left to model")
    repeated = [n for k, n in enumerate(chosen) if n in chosen[:k]]
    if repeated:
        raise ValueError(f"--columns names {repeated[0]!r} more than once; a column is modelled once")
    return frame[chosen]


def _refuse_beyond_float32(table, text, places):
    """A number beyond float32 in a training file: refused with its file, line and column
    before the fit, which would name only a row of the concatenated files."""
    for name in table.columns:
        if not pd.api.types.is_numeric_dtype(table[name].dtype) or pd.api.types.is_bool_dtype(table[name].dtype):
            continue
        values = table[name].to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            beyond = np.flatnonzero(np.abs(values) > _FLOAT32_MAX)  # NaN compares False
        if beyond.size:
            # (a text that parses as inf, '1e400', never gets here: it makes the column categorical,
            # which _refuse_odd_cells refuses)
            where, line = places[beyond[0]]
            raise ValueError(f"{where}: line {line}: column {name!r}: {quote_cell(text[name].iloc[beyond[0]])} is "
                             "beyond float32's range (3.4e38); rescale that column")


def _unique_files(paths):
    """Training files in order, each once: a file named twice (or by two spellings) would
    put its rows in the fit twice, and the same row in both the training and calibration splits."""
    seen, unique = set(), []
    for path in paths:
        if not _is_path(path):
            unique.append(path)  # a stream is read as given
            continue
        keys = _file_keys(path)
        if not keys & seen:  # by path, symlink or hard link
            unique.append(path)
        seen |= keys
    return unique


def _refuse_validation_among(train, validation):
    """A --validation file that is one of the training files is refused: the band and the
    conformal p-values need rows the network did not train on."""
    if not _is_path(validation):
        return
    keys = _file_keys(validation)
    for path in train:
        if _is_path(path) and keys & _file_keys(path):
            raise ValueError(f"--validation {_name(validation)} is also a training file ({_name(path)}): the band "
                             "must be calibrated on rows the model was not trained on")


def _refuse_odd_cells(text, places, categorical, na_values):
    """A column of numbers but for a few cells would turn categorical: refuse, naming them."""
    odd = odd_cells(text, categorical=set(categorical), na_values=na_values)
    if not odd:
        return
    name, positions = next(iter(odd.items()))
    shown = ", ".join(f"line {places[k][1]}: {quote_cell(text[name].iloc[k])}" for k in positions[:3])
    more = f" and {len(positions) - 3} more" if len(positions) > 3 else ""
    texts = sorted({str(text[name].iloc[k]) for k in positions})[:3]
    raise ValueError(
        f"{places[positions[0]][0]}: column {name!r} holds numbers but for {len(positions)} cell(s) ({shown}{more}), "
        f"which would make it categorical and every unseen number 'a category never seen'; declare them missing "
        f"with --na-values {' '.join(repr(t) for t in texts)} or model the column as categorical with --categorical {name}"
    )


def fit_csv(train, output=None, *, params=None, columns=None, exclude=None, categorical=(), validation=None,
            na_values=(), delimiter=",", encoding="utf-8", chunk_rows=65536, false_rejection=None):
    """Fit a detector on trusted CSV files (cells typed from their text) and write its model file.

    Parameters
    ----------
    train : list of (str, os.PathLike or binary stream)
        Trusted CSV files with the same header; a malformed line is an error.
    output : str or os.PathLike, optional
        The model file to write (atomically); None writes none.
    params : dict, optional
        :class:`~vaefilter.VAEOutlierDetector` parameters; ``categorical_features``
        is set from the typed table.
    columns, exclude : list of str, optional
        Model only these columns, or every column but these.
    categorical : list of str
        Columns to treat as categorical whatever their cells look like.
    validation : str, os.PathLike or binary stream, optional
        Valid rows to calibrate the band on (default: the ``calibration_fraction`` share of
        ``train``, held out from the fit); with it, no training rows are held out for the band.
    na_values, delimiter, encoding, chunk_rows :
        As the CLI's options.
    false_rejection : float in (0, 1), optional
        Set the band for this false-rejection rate
        (:meth:`~vaefilter.VAEOutlierDetector.calibrate`), on the sides of the
        band's percentiles.

    Returns
    -------
    FitSummary
    """
    from .io.csvio import AtomicWriter
    from .estimator import VAEOutlierDetector

    started = time.perf_counter()
    params = dict(params or {})
    check_paths(inputs={**{f"training file {_name(p)}": p for p in train},
                        **({"--validation": validation} if validation is not None else {})},
                outputs={"--output": output})
    resolve_device(params.get("device", "auto"))
    train = _unique_files(train)
    if validation is not None:
        _refuse_validation_among(train, validation)
    parts = [_read_whole(path, chunk_rows, encoding, delimiter) for path in train]
    headers = {tuple(f.columns) for f, _ in parts}
    if len(headers) > 1:
        raise ValueError(f"training files have different headers: {sorted(headers)}")
    first = _name(train[0])
    text = _select_columns(pd.concat([f for f, _ in parts], ignore_index=True), columns, exclude, categorical, first)
    places = [place for _, p in parts for place in p]
    if len(text) < 2:
        raise ValueError(f"{first}: need at least 2 data rows to train, found {len(text)}")
    _refuse_odd_cells(text, places, categorical, na_values)
    table = infer_text_table(text, categorical=set(categorical), na_values=na_values)
    _refuse_beyond_float32(table, text, places)
    typed_categorical = {n for n in table.columns if isinstance(table[n].dtype, pd.CategoricalDtype)}
    params["categorical_features"] = sorted(typed_categorical) or None
    if validation is not None:
        # read first: a --validation file without rows used to fail only after the training
        valid_frame, valid_places = _read_whole(validation, chunk_rows, encoding, delimiter)
        valid_text = _select_columns(valid_frame, columns, exclude, categorical, _name(validation))
        if len(valid_text) == 0:
            raise ValueError(f"{_name(validation)}: no data rows to calibrate the band on")
        # the band comes from the --validation rows: no training rows need holding out for it
        params["calibration_fraction"], params["calibration_folds"] = 0.0, None
    with warnings.catch_warnings():
        if validation is not None:  # about the interim band, which the --validation rows replace
            warnings.filterwarnings("ignore", message="the band is calibrated on only", category=UserWarning)
        detector = VAEOutlierDetector(**params).fit(table)
    if validation is not None:
        valid, problems = parse_text_table(valid_text, detector.schema_, source=_name(validation),
                                           na_values=na_values)
        if problems:
            row = min(problems)
            raise ValueError(f"{_name(validation)}: line {valid_places[row][1]}: {problems[row]}")
        detector.calibrate(valid)
    if false_rejection is not None:
        detector.calibrate(false_rejection=false_rejection)
    if output is not None:
        with AtomicWriter(output) as out:
            out.write(model_bytes(detector))
    return FitSummary(detector, len(table), None if output is None else os.fspath(output),
                      time.perf_counter() - started, [places[i] for i in detector.training_set_aside_])
