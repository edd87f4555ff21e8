"""The ``vaefilter`` command: fit, score, filter, info, report, demo.

Exit status: 0 on success, 1 when ``--fail-on-invalid`` is given and a row was
rejected, 2 on usage or input errors (one line on stderr naming file, line
and column). Rows that cannot be parsed never stop a run: they are rejected
with a reason.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import signal
import sys
import warnings

import numpy as np
import pandas as pd

from .columns import CATEGORICAL, TableSchema
from .csvio import AtomicOutputs, AtomicWriter, CsvFormatError, CsvReader, append_fields, check_encoding
from .devices import resolve_device
from .persistence import ModelFileError, load_model, model_bytes, read_header
from .texttypes import infer_text_table, odd_cells, parse_text_table, quote_cell

EXIT_OK, EXIT_INVALID_ROWS, EXIT_USAGE = 0, 1, 2


class UsageError(ValueError):
    """A command line argparse rejects: reported on one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see --help)")


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that temporary outputs are removed."""


#: the longest reason written to an output; longer ones are cut
MAX_REASON_CHARS = 1000

SCORE_FIELDS = ["log_px", "is_valid", "reason"]
REJECT_FIELDS = ["log_px", "band_lower", "band_upper", "reason"]


# ------------------------------------------------------------------ parsing
def _percentile(text):
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a percentile must be a number in [0, 100] or 'none', got {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"a percentile must lie in [0, 100], got {text!r}")
    return value


def _encoding(text):
    try:
        check_encoding(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_csv_options(parser):
    parser.add_argument("--delimiter", default=",", help="field delimiter (default ',')")
    parser.add_argument("--encoding", default="utf-8", type=_encoding, help="text encoding (default utf-8)")
    parser.add_argument("--chunk-rows", type=int, default=65536, help="rows per chunk (memory stays flat)")
    parser.add_argument("--na-values", nargs="+", default=[], metavar="TEXT",
                        help="cell texts read as missing besides '', NA, N/A, NaN, nan, null, NULL, None "
                             "(give the same ones to fit and to score/filter/report)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where the model computes (default auto: a GPU when there is one), whatever "
                             "device the model was fitted on")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_fit_parser(commands):
    p = commands.add_parser("fit", help="learn valid rows from trusted CSV files", description="Train a detector on trusted CSV files and save it.")
    p.add_argument("train", nargs="+", help="trusted CSV file(s) with the same header ('-' for stdin)")
    p.add_argument("-o", "--output", required=True, help="model file to write")
    cols = p.add_mutually_exclusive_group()
    cols.add_argument("--columns", nargs="+", metavar="NAME", help="model only these columns")
    cols.add_argument("--exclude", nargs="+", metavar="NAME", help="model every column but these")
    p.add_argument("--categorical", nargs="+", default=[], metavar="NAME", help="treat these columns as categorical")
    p.add_argument("--validation", metavar="VALID.csv", help="valid rows to calibrate the band on (default: a held-out share)")
    p.add_argument("--percentiles", nargs=2, type=_percentile, default=[25.0, 75.0], metavar=("LOWER", "UPPER"),
                   help="band percentiles of validation log p(x); 'none' drops a side (default 25 75)")
    p.add_argument("--latent-dim", type=int, default=8)
    p.add_argument("--hidden", type=int, nargs="*", default=[128, 128], metavar="WIDTH", help="hidden layer widths")
    p.add_argument("--epochs", type=int, default=200, help="maximum epochs")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--importance-samples", type=int, default=100, help="K draws per row for log p(x)")
    p.add_argument("--proposal-steps", type=int, default=200,
                   help="steps refitting the encoder as the sampler's proposal after training (0: none)")
    p.add_argument("--posterior-search-steps", type=int, default=10,
                   help="when scoring, at most this many Newton steps to the posterior mode of rows "
                        "the encoder fits poorly, for a second proposal (default 10; 0: none)")
    p.add_argument("--validation-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _add_csv_options(p)
    p.set_defaults(handler=run_fit)


def _add_stream_parsers(commands):
    s = commands.add_parser("score", help="score every row", description="Write every input row with log_px, is_valid and reason appended.")
    s.add_argument("input", help="CSV file ('-' for stdin)")
    s.add_argument("-m", "--model", required=True)
    s.add_argument("-o", "--output", required=True, help="scored CSV ('-' for stdout)")
    s.add_argument("--fail-on-invalid", action="store_true", help="exit 1 when a row is invalid")
    _add_csv_options(s)
    s.set_defaults(handler=run_score)

    f = commands.add_parser("filter", help="split rows into valid and rejected",
                            description="Valid rows go out byte for byte; rejected rows gain log_px, the band and a reason.")
    f.add_argument("input", nargs="+",
                   help="CSV file ('-' for stdin); several files, a glob ('in/*.csv') or *.parquet run one task "
                        "per file through Dask (the dask extra)")
    f.add_argument("-m", "--model", required=True)
    f.add_argument("--valid", required=True,
                   help="CSV for valid rows ('-' for stdout); for several files a pattern such as 'out/valid-*.csv' "
                        "('*' becomes each input's name); for Parquet a dataset directory")
    f.add_argument("--invalid", required=True, help="CSV for rejected rows ('-' for stdout); a pattern or directory as --valid")
    f.add_argument("--fail-on-invalid", action="store_true", help="exit 1 when a row is rejected")
    f.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler to run the files on, e.g. tcp://scheduler:8786 (default for several files: "
                        "a local cluster of one worker process per core)")
    _add_csv_options(f)
    f.set_defaults(handler=run_filter_dispatch)


def build_parser():
    parser = _Parser(prog="vaefilter", description="A variational autoencoder as a learned data-validation gate.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    _add_fit_parser(commands)
    _add_stream_parsers(commands)
    info = commands.add_parser("info", help="describe a model file", description="Columns, types, band and training summary of a model.")
    info.add_argument("-m", "--model", required=True)
    info.set_defaults(handler=run_info)
    report = commands.add_parser("report", help="write a self-contained HTML report",
                                 description="Summarise a model and, optionally, a scored batch in one HTML file.")
    report.add_argument("input", nargs="?", help="CSV batch to score and summarise")
    report.add_argument("-m", "--model", required=True)
    report.add_argument("-o", "--output", required=True, help="HTML file to write")
    _add_csv_options(report)
    report.set_defaults(handler=run_report)
    demo = commands.add_parser("demo", help="train on the embedded digits and show what the gate rejects",
                               description="Train on digits 0-4, calibrate the band, count flagged rows of known and unseen digits.")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(handler=run_demo)
    return parser


def main(argv=None):
    """Entry point of the console script; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"vaefilter: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    with _sigterm_raises():
        try:
            return args.handler(args)
        except BrokenPipeError:
            return _quiet_broken_pipe()
        except (CsvFormatError, ModelFileError, ValueError, OSError, LookupError, RuntimeError) as exc:
            print(f"vaefilter: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("vaefilter: interrupted; no output was written under its final name", file=sys.stderr)
            return 130
        except _Terminated:
            print("vaefilter: terminated; no output was written under its final name", file=sys.stderr)
            return 128 + signal.SIGTERM


def _one_line(exc):
    """An error as one line: an OSError names its file first, like other messages."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _quiet_broken_pipe():
    """The reader of stdout went away (``| head``): end quietly, as Unix tools do."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 128 + signal.SIGPIPE


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM raises in the main thread (as Ctrl-C does), so ``with`` blocks remove temporary files."""
    def raise_terminated(signum, frame):
        raise _Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, raise_terminated)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------- fit
def _read_whole(path, args):
    """A trusted file as text: a malformed line is an error, not a rejection.

    Returns the cell texts and, per row, its ``(file, line)``.
    """
    frames, places = [], []
    with CsvReader(path, chunk_rows=args.chunk_rows, encoding=args.encoding, delimiter=args.delimiter) as reader:
        for chunk in reader:
            if chunk.errors:
                position = min(chunk.errors)
                raise ValueError(f"{reader.name}: {chunk.errors[position]} (training files must parse completely)")
            frames.append(chunk.frame)
            places.extend((reader.name, int(line)) for line in chunk.line_numbers)
        columns = reader.columns
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return frame, places


def _select_columns(frame, args, path):
    names = list(frame.columns)
    chosen = args.columns or [n for n in names if n not in set(args.exclude or [])]
    unknown = [n for n in [*(args.columns or []), *(args.exclude or []), *args.categorical] if n not in names]
    if unknown:
        raise ValueError(f"{path}: line 1: no column named {unknown[0]!r} (columns: {names})")
    return frame[chosen]


def _build_detector(args, categorical):
    from .estimator import VAEOutlierDetector

    return VAEOutlierDetector(
        latent_dim=args.latent_dim,
        hidden_layer_sizes=tuple(args.hidden),
        n_importance_samples=args.importance_samples,
        proposal_steps=args.proposal_steps,
        posterior_search_steps=args.posterior_search_steps,
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        validation_fraction=args.validation_fraction,
        threshold_percentiles=tuple(args.percentiles),
        categorical_features=sorted(categorical) or None,
        handle_missing="model",
        device=args.device,
        random_state=args.seed,
        verbose=int(not args.quiet and sys.stderr.isatty()),
    )


def _refuse_odd_cells(text, places, args):
    """A column of numbers but for a few cells would turn categorical: refuse, naming them."""
    odd = odd_cells(text, categorical=set(args.categorical), na_values=args.na_values)
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


def run_fit(args):
    _check_paths(inputs={**{f"training file {p}": p for p in args.train},
                         **({"--validation": args.validation} if args.validation else {})},
                 outputs={"--output": args.output})
    resolve_device(args.device)
    parts = [_read_whole(path, args) for path in args.train]
    headers = {tuple(f.columns) for f, _ in parts}
    if len(headers) > 1:
        raise ValueError(f"training files have different headers: {sorted(headers)}")
    text = _select_columns(pd.concat([f for f, _ in parts], ignore_index=True), args, args.train[0])
    places = [place for _, p in parts for place in p]
    if len(text) < 2:
        raise ValueError(f"{args.train[0]}: need at least 2 data rows to train, found {len(text)}")
    _refuse_odd_cells(text, places, args)
    table = infer_text_table(text, categorical=set(args.categorical), na_values=args.na_values)
    categorical = {n for n in table.columns if isinstance(table[n].dtype, pd.CategoricalDtype)}
    detector = _build_detector(args, categorical).fit(table)
    if args.validation:
        valid_frame, valid_places = _read_whole(args.validation, args)
        valid_text = _select_columns(valid_frame, args, args.validation)
        valid, problems = parse_text_table(valid_text, detector.schema_, source=args.validation,
                                           na_values=args.na_values)
        if problems:
            row = min(problems)
            raise ValueError(f"{args.validation}: line {valid_places[row][1]}: {problems[row]}")
        detector.calibrate(valid)
    with AtomicWriter(args.output) as out:
        out.write(model_bytes(detector))
    _print_summary(detector, args.output, len(table))
    return EXIT_OK


def _print_summary(detector, path, n_rows):
    lower, upper = detector.thresholds_
    kinds = ", ".join(f"{c.name}:{c.description}" for c in detector.schema_.columns)
    print(
        f"trained on {n_rows} rows ({kinds}); {detector.n_iter_} epochs; "
        f"band log p(x) in [{_fmt(lower)}, {_fmt(upper)}]; model written to {path}",
        file=sys.stderr,
    )


def _fmt(value):
    return "none" if value is None else f"{value:.3f}"


# ------------------------------------------------------------ score/filter
def _progress(args):
    if args.quiet or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(unit=" rows", unit_scale=True, file=sys.stderr, desc="vaefilter")


_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NOT_FINITE = "log p(x) is not finite"


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


def _explain(detector, frame):
    """explain() without scikit-learn's feature-name warning for models fitted on unnamed or
    integer-named columns (the CSV header gives the columns names)."""
    if not hasattr(detector, "feature_names_in_") and detector.schema_.is_numeric_only:
        frame = frame.to_numpy(dtype=np.float64)
        return detector.explain(frame)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X has feature names", category=UserWarning)
        return detector.explain(frame)


def _explain_splitting(detector, typed, reasons, parts=8):
    """explain() of a table; where log p(x) overflows, the failing parts are split (``parts``
    ways) until the rows that overflow are found, each getting a reason; other errors raise."""
    try:
        return [_explain(detector, typed)[["log_px", "is_valid", "reason"]]]
    except ValueError as exc:
        if not str(exc).startswith(_NOT_FINITE):
            raise
        if len(typed) == 1:
            label = typed.index[0]
            numbers = typed.iloc[0].apply(lambda v: abs(v) if isinstance(v, (int, float, np.number)) else np.nan)
            largest = numbers.astype(float).idxmax() if numbers.notna().any() else None
            where = f"; its largest value is {largest}={typed.iloc[0][largest]!r}" if largest is not None else ""
            reasons[label] = (f"{_NOT_FINITE}: the likelihood overflowed on a value far outside the training "
                              f"range{where}")
            return []
    out = []
    for piece in np.array_split(np.arange(len(typed)), min(parts, len(typed))):
        if len(piece):
            out.extend(_explain_splitting(detector, typed.iloc[piece], reasons, parts))
    return out


def _score_table(detector, typed):
    """log_px, is_valid, reason of the rows that parsed, in one vectorised pass.

    Rows the model cannot score (a value beyond float32, a missing cell a model
    fitted with handle_missing='error' refuses, a log p(x) that overflows) are
    invalid with that reason; any other error is about the model or the machine,
    not a row, and raises.
    """
    columns = ["log_px", "is_valid", "reason"]
    if typed.empty:
        return pd.DataFrame(columns=columns)
    unscorable = _unscorable_cells(detector, typed.reset_index(drop=True))
    reasons = {typed.index[k]: r for k, r in unscorable.items()}
    rest = typed.drop(index=list(reasons)) if reasons else typed
    parts = _explain_splitting(detector, rest, reasons) if len(rest) else []
    failed = pd.DataFrame({"log_px": np.nan, "is_valid": False, "reason": list(reasons.values())},
                          index=list(reasons.keys()))
    frames = [f for f in [*parts, failed] if len(f)]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames).reindex(typed.index)


def _cut(reason):
    """A reason of at most MAX_REASON_CHARS characters."""
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    return reason[:MAX_REASON_CHARS] + f"... ({len(reason)} characters, cut)"


def _chunk_results(detector, chunk, source, na_values=()):
    """(log_px, is_valid, reason) for every record of a chunk, in record order."""
    n = len(chunk.records)
    log_px = np.full(n, np.nan)
    is_valid = np.zeros(n, dtype=bool)
    reasons = [""] * n
    for position, problem in chunk.errors.items():
        reasons[position] = f"unparseable: {problem}"
    typed, problems = parse_text_table(chunk.frame, detector.schema_, source=source, na_values=na_values)
    for position, problem in problems.items():
        reasons[position] = f"line {chunk.line_numbers[position]}: {problem}"
    scored = _score_table(detector, typed.drop(index=list(problems)))
    positions = scored.index.to_numpy(dtype=int)
    log_px[positions] = scored["log_px"].to_numpy(dtype=float)
    is_valid[positions] = scored["is_valid"].to_numpy(dtype=bool)
    for position, reason in zip(positions, scored["reason"]):
        if not np.isfinite(log_px[position]) and reason.startswith(("column ", _NOT_FINITE)):
            reason = f"line {chunk.line_numbers[position]}: {reason}"
        reasons[position] = reason
    return log_px, is_valid, [_cut(r) for r in reasons]


def _load(args):
    """The model, computing on ``--device`` whatever device it was fitted on."""
    detector = load_model(args.model)
    device = getattr(args, "device", "auto")
    resolve_device(device)  # a device this machine lacks stops the run here, not per row
    detector.set_params(device=device)
    return detector


def _open_input(args, detector):
    reader = CsvReader(args.input, chunk_rows=args.chunk_rows, encoding=args.encoding, delimiter=args.delimiter)
    missing = [n for n in detector.schema_.names if n not in reader.columns]
    if missing:
        reader.close()
        raise ValueError(f"{reader.name}: line 1: the header lacks column(s) the model needs: {missing}")
    return reader


def _results(args, detector, reader):
    """(chunk, log_px, is_valid, reasons) per chunk, with a progress bar in rows."""
    bar = _progress(args)
    try:
        for chunk in reader:
            yield (chunk, *_chunk_results(detector, chunk, reader.name, args.na_values))
            if bar is not None:
                bar.update(len(chunk.records))
    finally:
        if bar is not None:
            bar.close()


def _number(value):
    return "" if np.isnan(value) else f"{value:.6f}"


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


def run_score(args):
    _check_paths(inputs={"the input": args.input, "--model": args.model}, outputs={"--output": args.output})
    detector = _load(args)
    csv = dict(encoding=args.encoding, delimiter=args.delimiter)
    n_invalid = 0
    with _open_input(args, detector) as reader, AtomicWriter(args.output) as out:
        csv["terminator"] = reader.line_terminator
        out.write(append_fields(reader.header, _appended_names(reader.columns, SCORE_FIELDS), **csv))
        for chunk, log_px, is_valid, reasons in _results(args, detector, reader):
            out.write(b"".join(
                append_fields(record, [_number(s), "true" if v else "false", r], **csv)
                for record, s, v, r in zip(chunk.records, log_px, is_valid, reasons)
            ))
            n_invalid += int((~is_valid).sum())
    return EXIT_INVALID_ROWS if args.fail_on_invalid and n_invalid else EXIT_OK


def _file_id(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _check_paths(inputs, outputs):
    """Refuse outputs that would overwrite each other, an input or the model.

    Compared by resolved path and, for files that exist, by device and inode
    (symbolic and hard links). ``-`` is stdin for inputs and stdout for outputs.
    """
    seen = {}  # key -> what
    for what, path in inputs.items():
        if path is None or os.fspath(path) == "-":
            continue
        for key in (os.path.realpath(path), _file_id(path)):
            if key is not None:
                seen.setdefault(key, what)
    for what, path in outputs.items():
        path = os.fspath(path)
        keys = ["-"] if path == "-" else [os.path.realpath(path), _file_id(path)]
        for key in keys:
            if key is not None and key in seen:
                other = seen[key]
                name = "stdout" if path == "-" else repr(path)
                raise ValueError(f"{other} and {what} both name {name}; each output needs its own file, "
                                 "apart from the inputs and the model")
        for key in keys:
            if key is not None:
                seen[key] = what


def run_filter(args):
    _check_paths(inputs={"the input": args.input, "--model": args.model},
                 outputs={"--valid": args.valid, "--invalid": args.invalid})
    detector = _load(args)
    band = ["" if t is None else f"{t:.6f}" for t in detector.thresholds_]
    csv = dict(encoding=args.encoding, delimiter=args.delimiter)
    n_invalid = 0
    with _open_input(args, detector) as reader, AtomicOutputs([args.valid, args.invalid]) as (valid_out, invalid_out):
        csv["terminator"] = reader.line_terminator
        valid_out.write(reader.header)
        invalid_out.write(append_fields(reader.header, _appended_names(reader.columns, REJECT_FIELDS), **csv))
        for chunk, log_px, is_valid, reasons in _results(args, detector, reader):
            valid_out.write(b"".join(record for record, v in zip(chunk.records, is_valid) if v))
            invalid_out.write(b"".join(
                append_fields(record, [_number(s), *band, reason], **csv)
                for record, s, v, reason in zip(chunk.records, log_px, is_valid, reasons) if not v
            ))
            n_invalid += int((~is_valid).sum())
    return EXIT_INVALID_ROWS if args.fail_on_invalid and n_invalid else EXIT_OK


def _is_single_plain_file(args):
    if len(args.input) != 1 or args.scheduler is not None:
        return False
    (path,) = args.input
    if path.endswith(".parquet"):
        return False
    return path == "-" or not glob.has_magic(path) or os.path.exists(path)


def run_filter_dispatch(args):
    """One CSV file without --scheduler: :func:`run_filter`. Otherwise one Dask task per file
    (:func:`vaefilter.dask.filter_files`), each task running :func:`run_filter` on its file."""
    if _is_single_plain_file(args):
        args.input = args.input[0]
        return run_filter(args)
    try:
        from .dask import filter_files

        results = filter_files(args.model, args.input, args.valid, args.invalid, scheduler=args.scheduler,
                               delimiter=args.delimiter, encoding=args.encoding, chunk_rows=args.chunk_rows,
                               na_values=args.na_values, device=args.device)
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    n_valid = sum(r["n_valid"] for r in results)
    n_invalid = sum(r["n_invalid"] for r in results)
    if not args.quiet:
        n_files = sum(len(r["input"]) if isinstance(r["input"], list) else 1 for r in results)
        print(f"{n_files} file(s): {n_valid} valid and {n_invalid} rejected rows", file=sys.stderr)
    return EXIT_INVALID_ROWS if args.fail_on_invalid and n_invalid else EXIT_OK


# --------------------------------------------------------------- info/demo
def run_info(args):
    load_model(args.model)  # validates the whole file, not only the header
    header = read_header(args.model)
    params, fitted = header["params"], header["fitted"]
    lower, upper = fitted["thresholds_"]
    print(f"model: {args.model}")
    print(f"versions: {', '.join(f'{k} {v}' for k, v in header['versions'].items())}")
    print("columns:")
    for column in TableSchema.from_dict(header["schema"]).columns:
        extra = f" categories={column.categories}" if column.kind == CATEGORICAL else ""
        missing = " (missing values modelled)" if column.has_missing else ""
        print(f"  {column.name}: {column.description}{extra}{missing}")
    print(f"band: log p(x) in [{_fmt(lower)}, {_fmt(upper)}] nats "
          f"(percentiles {params['threshold_percentiles']} of {len(fitted['validation_scores_'])} validation rows)")
    print(f"model: latent_dim={params['latent_dim']} hidden={params['hidden_layer_sizes']} "
          f"K={params['n_importance_samples']} likelihood={params['likelihood']} "
          f"posterior_search_steps={params.get('posterior_search_steps', 10)}")
    curve, val_curve = fitted["loss_curve_"], fitted["validation_loss_curve_"]
    print(f"training: {fitted['n_iter_']} epochs, best epoch {fitted['best_epoch_']}, final -ELBO "
          f"{curve[-1]:.3f} train / {val_curve[-1] if val_curve else float('nan'):.3f} validation (nats/row)")
    refit = fitted.get("proposal_curve_") or []
    if refit:
        print(f"proposal refit: {refit[-1][0]} steps, held-out 32-sample bound {refit[0][1]:.3f} -> "
              f"{refit[-1][1]:.3f} nats/row")
    return EXIT_OK


def run_report(args):
    from .report import write_report

    _check_paths(inputs={"the input": args.input, "--model": args.model}, outputs={"--output": args.output})
    detector = _load(args)
    batch, title = None, "vaefilter report"
    if args.input:
        frames, left_out, n_records = [], [], 0
        with _open_input(args, detector) as reader:
            for chunk in reader:
                n_records += len(chunk.records)
                _, _, reasons = _chunk_results(detector, chunk, reader.name, args.na_values)
                typed, problems = parse_text_table(chunk.frame, detector.schema_, source=reader.name,
                                                   na_values=args.na_values)
                scored = [k for k in typed.index if k not in problems and not _left_out(reasons[k])]
                frames.append(typed.loc[scored])
                left_out.extend(reasons[k] for k in range(len(chunk.records)) if _left_out(reasons[k]))
            name = reader.name
        batch = pd.concat(frames, ignore_index=True) if frames else None
        if left_out:
            title = (f"vaefilter report: {name}, {n_records - len(left_out)} of {n_records} rows scored; "
                     f"{len(left_out)} could not be parsed or scored (first: {left_out[0]})")
            print(f"vaefilter: {name}: {len(left_out)} of {n_records} rows could not be parsed or scored and are "
                  f"not in the report's batch figures; first: {left_out[0]}", file=sys.stderr)
    write_report(detector, args.output, batch=batch, title=title)
    print(f"report written to {args.output}", file=sys.stderr)
    return EXIT_OK


def _left_out(reason):
    """Whether a chunk reason is a parse or scoring failure (no log p(x)) rather than a verdict."""
    return reason.startswith(("unparseable:", "line "))


def run_demo(args):
    from .datasets import digits_split
    from .estimator import VAEOutlierDetector

    known, unseen = digits_split()
    order = np.random.RandomState(args.seed).permutation(len(known))
    n_part = len(known) // 5
    test, calibration, train = known[order[:n_part]], known[order[n_part : 2 * n_part]], known[order[2 * n_part :]]
    print(f"digits: training on {len(train)} images of classes 0-4 (8x8 pixels) ...", flush=True)
    detector = VAEOutlierDetector(random_state=args.seed).fit(train)
    print(f"trained for {detector.n_iter_} epochs; held-out mean log p(x) = {detector.score(test):.1f} nats")
    for percentiles in [(25, 75), (1, None)]:
        detector.calibrate(calibration, threshold_percentiles=percentiles)
        flagged_known = int((detector.predict(test) == -1).sum())
        flagged_unseen = int((detector.predict(unseen) == -1).sum())
        lower, upper = detector.thresholds_
        print(f"band at percentiles {percentiles} of {len(calibration)} calibration rows: "
              f"log p(x) in [{_fmt(lower)}, {_fmt(upper)}] nats")
        print(f"  held-out digits of the trained classes 0-4 flagged: {flagged_known:4d} / {len(test)} "
              f"({flagged_known / len(test):.1%})")
        print(f"  digits of the unseen classes 5-9 flagged:          {flagged_unseen:4d} / {len(unseen)} "
              f"({flagged_unseen / len(unseen):.1%})")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
