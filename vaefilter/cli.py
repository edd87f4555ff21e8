"""The ``vaefilter`` command: fit, score, filter, info, report, demo.

Argument parsing only: each command calls :mod:`vaefilter.pipeline` (or
:mod:`vaefilter.dask` for many files) with plain options, and the defaults of
the model's settings are read from :class:`~vaefilter.VAEOutlierDetector`.

Exit status: 0 on success, 1 when ``--fail-on-invalid`` is given and a row was
rejected, 2 on usage or input errors (one line on stderr naming file, line
and column), 3 when ``filter --fail-on-drift`` is given and a batch drifted
(3 wins over 1). Rows that cannot be parsed never stop a run: they are
rejected with a reason.
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

from .columns import CATEGORICAL, VALUE_KINDS
from .io.csvio import CsvFormatError, check_encoding
from .drift import DEFAULT_ALPHA, render_drift
from .estimator import (CV_EPOCHS_BELOW_ROWS, CV_EPOCHS_FOLDS, VAEOutlierDetector, band_percentiles, chosen_epoch_count,
                        describe_epochs, held_out_label, search_threshold, training_loss_name)
from .persistence import ModelFileError, load_model, read_header
from .band import describe_band
from .pipeline import (MAX_REASON_CHARS, REJECT_FIELDS, SCORE_FIELDS, error_text, filter_csv, fit_csv, output_path,
                       report_csv, score_csv)

__all__ = ["EXIT_DRIFT", "EXIT_INVALID_ROWS", "EXIT_OK", "EXIT_USAGE", "MAX_REASON_CHARS", "REJECT_FIELDS",
           "SCORE_FIELDS", "UsageError", "build_parser", "main"]

EXIT_OK, EXIT_INVALID_ROWS, EXIT_USAGE, EXIT_DRIFT = 0, 1, 2, 3
EXIT_CODES = ("exit status: 0 success; 1 --fail-on-invalid and a row was rejected; 2 usage or input error; "
              "3 --fail-on-drift and a batch drifted (3 wins over 1)")

#: the estimator's defaults, the one source of the CLI's model settings
DEFAULTS = VAEOutlierDetector().get_params()
#: where the CLI departs from them: reproducible fits, missing cells modelled (CSV files have them)
CLI_SEED, CLI_HANDLE_MISSING = 0, "model"


class UsageError(ValueError):
    """A command line argparse rejects: reported on one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see --help)")


class _Terminated(BaseException):
    """SIGTERM or SIGHUP, raised in the main thread so that temporary outputs are removed."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


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


def _column_kind(text):
    """'NAME=KIND' -> (NAME, KIND); the last '=' splits, so names may hold '='."""
    name, sep, kind = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=KIND, got {text!r}")
    if kind not in VALUE_KINDS:
        raise argparse.ArgumentTypeError(f"{text!r}: the kind must be one of {', '.join(VALUE_KINDS)}")
    return name, kind


def _calibration_folds(text):
    """--calibration-folds: a whole number >= 2, 'auto' or 'none'."""
    if text in ("auto", "none"):
        return None if text == "none" else text
    try:
        folds = int(text)
    except ValueError:
        folds = 0
    if folds < 2:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 2, 'auto' or 'none', got {text!r}")
    return folds


def _trim_fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < 0.5:
        raise argparse.ArgumentTypeError(f"--trim-fraction must be a number in [0, 0.5), got {text!r}")
    return value


def _typed_in(convert, accepts, wanted):
    """An argparse type: ``convert(text)`` where ``accepts`` the value, else an error that says ``wanted``
    (argparse names the option)."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accepts(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    return parse


_positive_int = _typed_in(int, lambda value: value >= 1, "a whole number >= 1")
_seed = _typed_in(int, lambda value: 0 <= value < 2**32, "a whole number in [0, 2**32 - 1]")
_probability = _typed_in(float, lambda value: 0 < value < 1, "a number in (0, 1)")


def _encoding(text):
    try:
        check_encoding(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_csv_options(parser):
    parser.add_argument("--delimiter", default=",", help="field delimiter (default ',')")
    parser.add_argument("--encoding", default="utf-8", type=_encoding, help="text encoding (default utf-8)")
    parser.add_argument("--chunk-rows", type=_positive_int, default=65536, help="rows per chunk (memory stays flat)")
    parser.add_argument("--na-values", nargs="+", default=[], metavar="TEXT",
                        help="cell texts read as missing besides '', NA, N/A, NaN, nan, null, NULL, None "
                             "(give the same ones to fit and to score/filter/report)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=DEFAULTS["device"],
                        help="where the model computes (default auto: a GPU when there is one), whatever "
                             "device the model was fitted on")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar (and no summary from filter)")


def _csv_options(args):
    """The CSV options of a parsed command line, as keyword arguments of the pipeline."""
    return dict(delimiter=args.delimiter, encoding=args.encoding, chunk_rows=args.chunk_rows,
                na_values=tuple(args.na_values), device=args.device)


def _add_fit_parser(commands):
    d = DEFAULTS
    p = commands.add_parser("fit", help="learn valid rows from trusted CSV files", description="Train a detector on trusted CSV files and save it.")
    p.add_argument("train", nargs="+", help="trusted CSV file(s) with the same header ('-' for stdin)")
    p.add_argument("-o", "--output", required=True, help="model file to write")
    cols = p.add_mutually_exclusive_group()
    cols.add_argument("--columns", nargs="+", metavar="NAME", help="model only these columns")
    cols.add_argument("--exclude", nargs="+", metavar="NAME", help="model every column but these")
    p.add_argument("--categorical", nargs="+", default=[], metavar="NAME", help="treat these columns as categorical")
    p.add_argument("--column-kinds", nargs="+", type=_column_kind, default=[], metavar="NAME=KIND",
                   help="declare numeric columns' value kinds instead of inferring them "
                        f"(KIND one of {', '.join(VALUE_KINDS)}; checked against the training values)")
    p.add_argument("--validation", metavar="VALID.csv", help="valid rows to calibrate the band on (default: a held-out share)")
    percentiles = [None if v is None else float(v) for v in d["threshold_percentiles"]]
    p.add_argument("--percentiles", nargs=2, type=_percentile, default=percentiles, metavar=("LOWER", "UPPER"),
                   help="band percentiles of the calibration rows' log p(x); 'none' drops a side "
                        f"(default {' '.join('none' if v is None else f'{v:g}' for v in percentiles)})")
    p.add_argument("--false-rejection", type=_probability, metavar="ALPHA",
                   help="set the band to reject at most this share of valid rows, exactly (a rank threshold on "
                        "the calibration rows: conformal p-value <= ALPHA), on the sides --percentiles keeps; "
                        "e.g. --percentiles 1 none --false-rejection 0.01")
    p.add_argument("--latent-dim", type=int, default=d["latent_dim"])
    p.add_argument("--hidden", type=int, nargs="*", default=list(d["hidden_layer_sizes"]), metavar="WIDTH",
                   help="hidden layer widths")
    p.add_argument("--epochs", type=int, default=d["max_epochs"], help="maximum epochs")
    p.add_argument("--epoch-selection", choices=("auto", "early_stopping", "cross_validation"),
                   default=d["epoch_selection"],
                   help="how fit decides how long to train: early stopping on held-out rows, or the epoch count "
                        f"chosen by {CV_EPOCHS_FOLDS}-fold cross-validation of held-out log p(x); 'auto': "
                        f"cross-validation below {CV_EPOCHS_BELOW_ROWS} rows (default {d['epoch_selection']})")
    p.add_argument("--n-iter-no-change", type=int, default=d["n_iter_no_change"], metavar="EPOCHS",
                   help="early stopping's patience: epochs without improvement on the held-out rows before the "
                        f"step size is cut, twice, then training stops (default {d['n_iter_no_change']})")
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--learning-rate", type=float, default=d["learning_rate"])
    p.add_argument("--training-samples", type=_positive_int, default=d["training_samples"], metavar="K",
                   help="draws per row in the training loss: 1 the ELBO, K > 1 the K-sample importance-weighted bound")
    p.add_argument("--importance-samples", type=int, default=d["n_importance_samples"], help="K draws per row for log p(x)")
    p.add_argument("--proposal-steps", type=int, default=d["proposal_steps"],
                   help="steps refitting the encoder as the sampler's proposal after training (0: none)")
    p.add_argument("--posterior-search-steps", type=int, default=d["posterior_search_steps"],
                   help="when scoring, at most this many Newton steps to the posterior mode of rows "
                        f"the encoder fits poorly, for a second proposal (default {d['posterior_search_steps']}; 0: none)")
    p.add_argument("--posterior-search-tolerance", type=float, default=d["posterior_search_tolerance"],
                   metavar="NATS",
                   help="held-out log p(x), nats per row, the fit may give up to search fewer rows "
                        f"(default {d['posterior_search_tolerance']:g}; 0: every row the flag marks)")
    p.add_argument("--validation-fraction", type=float, default=d["validation_fraction"],
                   help=f"share of rows held out for early stopping (default {d['validation_fraction']:g})")
    p.add_argument("--calibration-fraction", type=float, default=d["calibration_fraction"],
                   help="share of rows held out for the band alone, never seen by the fit "
                        f"(default {d['calibration_fraction']:g}; 0: the band on the early-stopping rows)")
    p.add_argument("--calibration-folds", type=_calibration_folds, default=d["calibration_folds"], metavar="K",
                   help="cross-fitted calibration: train on every row but the early-stopping ones and set the band on the out-of-fold "
                        "scores of K networks, each trained without its fold (K >= 2; 'auto': 5 below 500 rows; "
                        "'none': the calibration split; default "
                        f"{'none' if d['calibration_folds'] is None else d['calibration_folds']})")
    p.add_argument("--trim-fraction", type=_trim_fraction, default=d["trim_fraction"], metavar="SHARE",
                   help="share of the training rows that may be bad, in [0, 0.5): after a warm-up the model "
                        "trains on all but that share of least likely rows, and as many of the least likely "
                        "calibration rows are left out of the band (default: trust every row)")
    p.add_argument("--column-relations", choices=("linear", "numeric", "none"), default=d["column_relations"],
                   help="'numeric': each numeric column's location moves linearly with the residuals of the "
                        "numeric columns before it; 'linear': and with the categories of the binary and "
                        "categorical columns; 'none': columns independent given z "
                        f"(default {d['column_relations']})")
    p.add_argument("--continuous-family", choices=("gaussian", "student_t"), default=d["continuous_family"],
                   help=f"law of the continuous columns given z (default {d['continuous_family']})")
    p.add_argument("--seed", type=_seed, default=CLI_SEED, help=f"random seed (default {CLI_SEED})")
    _add_csv_options(p)
    p.set_defaults(handler=run_fit)


def _add_stream_parsers(commands):
    s = commands.add_parser("score", help="score every row", description="Write every input row with log_px, is_valid and reason appended.")
    s.add_argument("input", help="CSV file ('-' for stdin)")
    s.add_argument("-m", "--model", required=True)
    s.add_argument("-o", "--output", required=True, help="scored CSV ('-' for stdout)")
    s.add_argument("--fail-on-invalid", action="store_true", help="exit 1 when a row is invalid")
    s.add_argument("--sequential", action="store_true",
                   help="stop rows whose decision is clear early, as filter does (their log_px is then the "
                        "estimate at fewer than K draws); default: K draws for every row")
    _add_csv_options(s)
    s.set_defaults(handler=run_score)

    f = commands.add_parser("filter", help="split rows into valid and rejected",
                            description="Valid rows go out byte for byte; rejected rows gain log_px, the band and a "
                                        "reason. Each input is tested for drift against the calibration rows.",
                            epilog=EXIT_CODES)
    f.add_argument("input", nargs="+",
                   help="CSV file ('-' for stdin); several files, a glob ('in/*.csv') or *.parquet run one task "
                        "per file through Dask (the dask extra)")
    f.add_argument("-m", "--model", required=True)
    f.add_argument("--valid", required=True,
                   help="CSV for valid rows ('-' for stdout); a pattern such as 'out/valid-*.csv' "
                        "('*' becomes each input's name); for Parquet a dataset directory")
    f.add_argument("--invalid", required=True, help="CSV for rejected rows ('-' for stdout); a pattern or directory as --valid")
    f.add_argument("--fail-on-invalid", action="store_true", help="exit 1 when a row is rejected")
    f.add_argument("--fail-on-drift", action="store_true",
                   help="exit 3 when the batch (each input file is one) differs from the calibration rows")
    f.add_argument("--drift-alpha", type=_probability, default=DEFAULT_ALPHA, metavar="ALPHA",
                   help=f"level of the drift alarm, family-wise over its tests (default {DEFAULT_ALPHA:g}: "
                        "about one false alarm in 100 clean batches)")
    f.add_argument("--summary-json", metavar="FILE",
                   help="write the run's summary (counts, band, timings, drift test) as JSON ('-' for stdout); "
                        "with several files, one entry per file")
    f.add_argument("--fdr", type=_probability, metavar="Q",
                   help="reject by Benjamini-Hochberg over each input file's conformal p-values instead of by the "
                        "band, so that valid rows make at most a share Q of the rejected ones on average; reads "
                        "each input twice (stdin is spooled to a temporary file); not for Parquet inputs")
    f.add_argument("--full-k", action="store_true",
                   help="K importance draws for every row; by default a row stops once its decision is clear "
                        "(the rejected rows' n_draws field says how many draws its log_px used)")
    f.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler to run the files on, e.g. tcp://scheduler:8786 (default for several files: "
                        "a local cluster of one worker process per core)")
    _add_csv_options(f)
    f.set_defaults(handler=run_filter_dispatch)


def build_parser():
    parser = _Parser(prog="vaefilter", description="A variational autoencoder as a learned data-validation gate.",
                     epilog=EXIT_CODES)
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
    report.add_argument("-o", "--output", required=True, help="HTML file to write (- for standard output)")
    _add_csv_options(report)
    report.set_defaults(handler=run_report)
    demo = commands.add_parser("demo", help="train on the embedded digits and show what the gate rejects",
                               description="Train on digits 0-4, calibrate the band, count flagged rows of known and unseen digits.")
    demo.add_argument("--seed", type=_seed, default=CLI_SEED)
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
    with _sigterm_raises(), _warnings_on_one_line():
        try:
            return args.handler(args)
        except BrokenPipeError:
            return _quiet_broken_pipe()
        # Warning: a warning turned error by 'python -W error' or PYTHONWARNINGS=error
        except (CsvFormatError, ModelFileError, ValueError, OSError, LookupError, RuntimeError, Warning) as exc:
            print(f"vaefilter: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("vaefilter: interrupted; no output was written under its final name", file=sys.stderr)
            return 130
        except _Terminated as exc:
            how = "hung up" if exc.signum == getattr(signal, "SIGHUP", None) else "terminated"
            print(f"vaefilter: {how}; no output was written under its final name", file=sys.stderr)
            return 128 + exc.signum


@contextlib.contextmanager
def _warnings_on_one_line():
    """Python warnings as ``vaefilter: warning: ...`` lines, like the errors: the default
    format printed the library's source path and line to a shell user."""
    def show(message, category, filename, lineno, file=None, line=None):
        # another library's warning (a FutureWarning of pandas) keeps its category
        kind = "" if issubclass(category, UserWarning) else f"{category.__name__}: "
        print(f"vaefilter: warning: {kind}{' '.join(str(message).split())}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _one_line(exc):
    """An error as one line (:func:`~vaefilter.pipeline.error_text`)."""
    return " ".join((error_text(exc) or type(exc).__name__).split())


def _quiet_broken_pipe():
    """The reader of stdout went away (``| head``): end quietly, as Unix tools do."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 128 + signal.SIGPIPE


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM and SIGHUP raise in the main thread (as Ctrl-C does), so ``with`` blocks remove temporary files.

    SIGHUP (the terminal closed, an ssh session dropped) killed the process
    with its temporary outputs and --fdr's spool of stdin left behind. A
    signal the process was started ignoring (``nohup``) stays ignored.
    """
    def raise_terminated(signum, frame):
        raise _Terminated(signum)

    previous = {}
    try:
        for name in ("SIGTERM", "SIGHUP"):
            signum = getattr(signal, name, None)  # no SIGHUP on Windows
            if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, raise_terminated)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _exit_status(args, n_rejected, drifted=False):
    if getattr(args, "fail_on_drift", False) and drifted:
        return EXIT_DRIFT
    return EXIT_INVALID_ROWS if args.fail_on_invalid and n_rejected else EXIT_OK


def _printable(name):
    """A column name as a terminal shows it: quoted (repr) where it holds a line break, an escape
    sequence or another unprintable character, which would fake lines or recolour the terminal."""
    text = str(name)
    return text if text.isprintable() else repr(text)


def _fmt(value):
    return "none" if value is None else f"{value:.3f}"


# ---------------------------------------------------------------- commands
def _fit_params(args):
    """The estimator parameters of ``vaefilter fit``'s options."""
    return dict(
        latent_dim=args.latent_dim,
        hidden_layer_sizes=tuple(args.hidden),
        n_importance_samples=args.importance_samples,
        proposal_steps=args.proposal_steps,
        posterior_search_steps=args.posterior_search_steps,
        posterior_search_tolerance=args.posterior_search_tolerance,
        max_epochs=args.epochs,
        epoch_selection=args.epoch_selection,
        n_iter_no_change=args.n_iter_no_change,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        training_samples=args.training_samples,
        validation_fraction=args.validation_fraction,
        trim_fraction=args.trim_fraction,
        calibration_fraction=args.calibration_fraction,
        calibration_folds=args.calibration_folds,
        threshold_percentiles=tuple(args.percentiles),
        column_kinds=dict(args.column_kinds) or None,
        column_relations=args.column_relations,
        continuous_family=args.continuous_family,
        handle_missing=CLI_HANDLE_MISSING,
        device=args.device,
        random_state=args.seed,
        verbose=int(not args.quiet and sys.stderr.isatty()),
    )


def _epochs_text(detector):
    """``fit``'s short account of the training length."""
    chosen = chosen_epoch_count(getattr(detector, "epoch_scores_", None))
    if chosen is None:
        return f"{detector.n_iter_} epochs"
    return f"{detector.n_iter_} epochs (at most {chosen}: the count chosen by {CV_EPOCHS_FOLDS}-fold cross-validation)"


def run_fit(args):
    options = _csv_options(args)
    del options["device"]
    fitted = fit_csv(args.train, args.output, params=_fit_params(args), columns=args.columns, exclude=args.exclude,
                     categorical=args.categorical, validation=args.validation,
                     false_rejection=args.false_rejection, **options)
    detector = fitted.detector
    lower, upper = detector.thresholds_
    kinds = ", ".join(f"{_printable(c.name)}:{c.description}" for c in detector.schema_.columns)
    print(
        f"trained on {fitted.n_rows} rows ({kinds}); {_epochs_text(detector)}; "
        f"band log p(x) in [{_fmt(lower)}, {_fmt(upper)}]; model written to {args.output}",
        file=sys.stderr,
    )
    if detector.trim_fraction:
        shown = ", ".join(f"{name} line {line}" for name, line in fitted.set_aside[:SHOWN_ROWS])
        more = f" and {len(fitted.set_aside) - SHOWN_ROWS} more" if len(fitted.set_aside) > SHOWN_ROWS else ""
        print(f"trim_fraction {detector.trim_fraction:g}: {_set_aside_text(detector)}"
              f"{'; set aside: ' + shown + more if shown else ''}", file=sys.stderr)
    return EXIT_OK


#: relations ``info`` lists
SHOWN_RELATIONS = 5

#: rows that ``fit`` and ``info`` list by name when ``trim_fraction`` set some aside
SHOWN_ROWS = 10


def _set_aside_text(detector):
    """How many training and calibration rows ``trim_fraction`` left out (one line's worth)."""
    n_aside = len(getattr(detector, "training_set_aside_", ()))
    n_excluded = len(getattr(detector, "calibration_excluded_", ()))
    return (f"{n_aside} training row(s) set aside as the least likely, "
            f"{n_excluded} calibration row(s) excluded from the band")


def run_score(args):
    summary = score_csv(args.model, args.input, args.output, progress=not args.quiet, sequential=args.sequential,
                        **_csv_options(args))
    return _exit_status(args, summary.n_rejected)


def run_filter(args):
    """``vaefilter filter`` on one input (``args.input`` a single path or '-')."""
    summary = filter_csv(args.model, args.input, args.valid, args.invalid, progress=not args.quiet,
                         drift_alpha=args.drift_alpha, summary_json=args.summary_json,
                         fdr=args.fdr, full_k=args.full_k, **_csv_options(args))
    if not args.quiet:
        unscored = f" ({summary.n_unscored} could not be scored)" if summary.n_unscored else ""
        print(f"{summary.input}: {summary.n_rows} rows, {summary.n_valid} valid, {summary.n_rejected} rejected"
              f"{unscored}; {summary.seconds:.1f} s", file=sys.stderr)
        print(render_drift(summary.drift), file=sys.stderr)
    return _exit_status(args, summary.n_rejected, summary.drift.drift)


def _is_single_plain_file(args):
    if len(args.input) != 1 or args.scheduler is not None:
        return False
    (path,) = args.input
    if path.endswith(".parquet"):
        return False
    return path == "-" or not glob.has_magic(path) or os.path.exists(path)


def run_filter_dispatch(args):
    """One CSV file without --scheduler: :func:`vaefilter.pipeline.filter_csv`. Otherwise one Dask
    task per file (:func:`vaefilter.dask.filter_files`), each running ``filter_csv`` on its file."""
    if _is_single_plain_file(args):
        args.input = args.input[0]
        if args.input != "-":
            # a pattern names the outputs of one file as of many: 'out/valid-*.csv' -> out/valid-<stem>.csv
            args.valid, args.invalid = (output_path(target, args.input) if target != "-" and "*" in target else target
                                        for target in (args.valid, args.invalid))
        return run_filter(args)
    try:
        from .dask import filter_files

        results = filter_files(args.model, args.input, args.valid, args.invalid, scheduler=args.scheduler,
                               drift_alpha=args.drift_alpha, summary_json=args.summary_json,
                               fdr=args.fdr, full_k=args.full_k, **_csv_options(args))
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    n_valid = sum(r["n_valid"] for r in results)
    n_invalid = sum(r["n_invalid"] for r in results)
    drifted = [r for r in results if (r.get("drift") or {}).get("drift")]
    if not args.quiet:
        n_files = sum(len(r["input"]) if isinstance(r["input"], list) else 1 for r in results)
        print(f"{n_files} file(s): {n_valid} valid and {n_invalid} rejected rows; drift in {len(drifted)} "
              f"of {len(results)} batch(es) at alpha={args.drift_alpha:g}", file=sys.stderr)
        for r in drifted:
            moved = ", ".join(f"{c['column']} {c['shift_nats']:+.2f} nats" for c in r["drift"]["columns"][:5])
            print(f"  {r['input']}: drift p={r['drift']['p_value']:.2g}" + (f"; columns: {moved}" if moved else ""),
                  file=sys.stderr)
    return _exit_status(args, n_invalid, bool(drifted))


def run_info(args):
    detector = load_model(args.model)  # validates the whole file, not only the header
    versions = read_header(args.model)["versions"]
    lower, upper = detector.thresholds_
    print(f"model: {args.model}")
    print(f"versions: {', '.join(f'{k} {v}' for k, v in versions.items())}")
    print("columns:")
    for column in detector.schema_.columns:
        extra = f" categories={column.categories}" if column.kind == CATEGORICAL else ""
        missing = " (missing values modelled)" if column.has_missing else ""
        print(f"  {_printable(column.name)}: {column.description}{extra}{missing}")
    how, *edges = describe_band(detector.validation_scores_, detector.thresholds_, band_percentiles(detector),
                                getattr(detector, "false_rejection_", None),
                                folds=getattr(detector, "calibration_folds_", None))
    print(f"band: log p(x) in [{_fmt(lower)}, {_fmt(upper)}] nats ({how})")
    for line in edges:
        print(f"band uncertainty: {line}")
    print(f"model: latent_dim={detector.latent_dim} hidden={list(detector.hidden_layer_sizes)} "
          f"K={detector.n_importance_samples} likelihood={detector.likelihood} "
          f"posterior_search_steps={detector.posterior_search_steps} "
          f"search_threshold={search_threshold(detector):.3g} column_relations={detector.column_relations} "
          f"continuous_family={detector.continuous_family}")
    strongest = detector.relations(SHOWN_RELATIONS)
    if len(strongest):
        listed = "; ".join(f"{_printable(row.column)} <- {_printable(row.parent)} {row.coefficient:+.3f}"
                           for row in strongest.itertuples())
        print(f"strongest relations (column <- parent, coefficient: standardised units, nats for a logit): {listed}")
    curve, val_curve = detector.loss_curve_, detector.validation_loss_curve_
    held_out = f" / {val_curve[-1]:.3f} held-out" if val_curve else ""
    print(f"training: {describe_epochs(detector)}; final {training_loss_name(detector)} {curve[-1]:.3f} "
          f"train{held_out} (nats/row)")
    if detector.trim_fraction:
        aside = list(getattr(detector, "training_set_aside_", ()))
        excluded = list(getattr(detector, "calibration_excluded_", ()))
        print(f"trim_fraction: {detector.trim_fraction:g}: {_set_aside_text(detector)}")
        for label, rows in (("set aside (training table rows, from 0)", aside),
                            ("excluded (calibration source rows, from 0: the training table or --validation)",
                             excluded)):
            if rows:
                more = f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else ""
                print(f"  {label}: "
                      f"{', '.join(str(int(r)) for r in rows[:SHOWN_ROWS])}{more}")
    refit = detector.proposal_curve_
    if refit:
        print(f"proposal refit: {refit[-1][0]} steps, {held_out_label(detector)} 32-sample bound {refit[0][1]:.3f} -> "
              f"{refit[-1][1]:.3f} nats/row")
    return EXIT_OK


def run_report(args):
    options = _csv_options(args)
    summary = report_csv(args.model, args.output, args.input, **options)
    if summary.n_unscored:
        print(f"vaefilter: {summary.input}: {summary.n_unscored} of {summary.n_rows} rows could not be parsed or "
              f"scored and are not in the report's batch figures; first: {summary.first_unscored}", file=sys.stderr)
    print(f"report written to {'standard output' if args.output == '-' else args.output}", file=sys.stderr)
    return EXIT_OK


def run_demo(args):
    from .datasets import digits_split

    known, unseen = digits_split()
    order = np.random.RandomState(args.seed).permutation(len(known))
    n_part = len(known) // 5
    test, calibration, train = known[order[:n_part]], known[order[n_part : 2 * n_part]], known[order[2 * n_part :]]
    print(f"digits: training on {len(train)} images of classes 0-4 (8x8 pixels) ...", flush=True)
    # the demo calibrates on its own held-out rows below, so fit holds none out for the band
    detector = VAEOutlierDetector(calibration_fraction=0.0, random_state=args.seed).fit(train)
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
