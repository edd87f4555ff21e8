"""The drift alarm: false alarms on clean batches, power on faulty and shifted ones, and its cost in filter.

    python benchmarks/bench_drift.py [--quick] [--seeds N] [--no-write]
    python benchmarks/bench_drift.py --timing-only    # only the filter cost on a 50,000-row CSV

Question: filtering one batch at a time, how often does ``drift_report`` (the
test ``vaefilter filter`` runs on every input file) raise a false alarm on a
clean batch, how often does it fire on batches with 2%, 5% or 20% faulty rows
or with one numeric column shifted, does it name the shifted column, and what
does it add to the filter's time?

Protocol, per table and seed (tables of ``mixed_tables.py`` with at least 800
rows: titanic, seattle_weather, fair, anes96, modechoice; the library's
default settings, nothing tuned here):

* shuffle; 50% train (``fit``, whose own 20% validation split early-stops),
  20% calibration, 30% the held-out pool batches are drawn from;
* ``calibrate()`` on the calibration rows, which ``fit`` never saw (``fit``'s
  own validation rows also early-stopped it, so they are not exchangeable
  with new rows: the "in-fit calibration" column measures what that costs);
* every pool row is scored once, clean, with a planted fault
  (``plant_faults``: the seven fault kinds in rotation) and with
  each numeric column shifted by +0.25 and +1 training standard deviation
  (whole-number columns by the nearest non-zero whole number, so the values
  stay in support); a batch is then m pool rows without replacement, and
  its test is ``vaefilter.drift.batch_drift`` on the rows' precomputed values,
  which equals ``drift_report`` on the batch (a row's score does not depend
  on the other rows; checked on one batch per model);
* clean batches: the false-alarm rate at alpha = 0.01, and that of a plain
  binomial test of the lower edge at k/(n+1) (what the beta-binomial test
  replaces); faulty batches: a share f of the m rows replaced by their faulty
  version; shifted batches: every row of the batch shifted, for each numeric
  column in turn; "named" = the shifted column is the first one named.

Batches drawn from one pool overlap, and all the batches of a model share its
calibration rows: the rates are averages over models of correlated batches.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from vaefilter.drift import batch_drift
from vaefilter.estimator import VAEOutlierDetector

HERE = Path(__file__).resolve().parent
from _common import make_titanic_csv
from faults import plant_faults
import mixed_tables

RESULTS = HERE / "RESULTS.md"
START, END = "<!-- bench_drift:start -->", "<!-- bench_drift:end -->"
TABLES = ("titanic", "seattle_weather", "fair", "anes96", "modechoice")
QUICK_TABLES = ("titanic", "modechoice")
ALPHA = 0.01
SHARES = (0.02, 0.05, 0.20)
SHIFTS = (0.25, 1.0)  # training standard deviations
N_CLEAN, N_FAULTY, N_SHIFTED = 300, 100, 20  # batches per model (per column for shifts)


def _values(det, frame):
    """log p(x) and per-column log p(x_j | z) of every row, scored once (the benchmark reuses rows
    across batches; drift_report would score each batch again and give the same values)."""
    estimate = det._log_marginal(det._validate_for_scoring(frame), per_column=True)
    return estimate.log_px, estimate.column_log_prob


def _shifted(frame, column, train, size):
    out = frame.copy()
    sd = float(np.nanstd(train[column].to_numpy(dtype=float), ddof=1))
    if out[column].dtype.kind == "i":
        out[column] = out[column] + max(1, int(round(size * sd)))
    else:
        out[column] = out[column] + size * sd
    return out


def _test(values, rows, calibration, det, faulty=None, faulty_rows=()):
    scores, columns = values
    scores, columns = scores[rows].copy(), columns[rows].copy()
    if faulty is not None and len(faulty_rows):
        position = np.searchsorted(rows, faulty_rows)
        scores[position], columns[position] = faulty[0][faulty_rows], faulty[1][faulty_rows]
    cal_scores, cal_columns, band = calibration
    return batch_drift(scores, cal_scores, band, alpha=ALPHA, column_log_prob=columns,
                       calibration_column_log_prob=cal_columns, names=list(det.schema_.names))


def run_model(table, seed, batch_sizes):
    frame, categorical, numeric = mixed_tables.load(table)
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(frame))
    n_train, n_cal = int(0.5 * len(frame)), int(0.2 * len(frame))
    train = frame.iloc[order[:n_train]].reset_index(drop=True)
    cal = frame.iloc[order[n_train:n_train + n_cal]].reset_index(drop=True)
    pool = frame.iloc[order[n_train + n_cal:]].reset_index(drop=True)
    det = VAEOutlierDetector(handle_missing="model", random_state=seed, device="cpu").fit(train)
    in_fit = (det.validation_scores_.copy(), det.calibration_column_log_prob_.copy(), det.thresholds_)
    det.calibrate(cal)
    fresh = (det.validation_scores_, det.calibration_column_log_prob_, det.thresholds_)

    planted, kind, _, _ = plant_faults(train, pool, categorical, numeric, rng)
    faulty_rows = np.flatnonzero(kind != "")
    clean = _values(det, pool)
    faulty = _values(det, planted)
    shifted = {(c, s): _values(det, _shifted(pool, c, train, s)) for c in numeric for s in SHIFTS}

    # the precomputed path equals drift_report on the batch
    rows = np.sort(rng.choice(len(pool), min(200, len(pool)), replace=False))
    assert _test(clean, rows, fresh, det) == det.drift_report(pool.iloc[rows])

    records = []
    for m in batch_sizes:
        if m > len(pool):
            continue
        base = dict(table=table, seed=seed, m=m, n_cal=len(cal))

        def draw():
            return np.sort(rng.choice(len(pool), m, replace=False))

        for _ in range(N_CLEAN):
            rows = draw()
            report = _test(clean, rows, fresh, det)
            in_fit_report = _test(clean, rows, in_fit, det)
            k = int(np.sum(fresh[0] < fresh[2][0])) + 1
            binomial = stats.binomtest(report.below.n_beyond, m, k / (len(cal) + 1), alternative="greater").pvalue
            records.append(dict(base, condition="clean", alarm=report.drift, in_fit_alarm=in_fit_report.drift,
                                binomial_alarm=binomial <= ALPHA, beta_binomial_alarm=report.below.p_value <= ALPHA,
                                named=np.nan))
        for share in SHARES:
            n_faulty = int(round(share * m))
            for _ in range(N_FAULTY):
                rows = draw()
                candidates = np.intersect1d(rows, faulty_rows)
                chosen = rng.choice(candidates, min(n_faulty, len(candidates)), replace=False)
                report = _test(clean, rows, fresh, det, faulty, np.sort(chosen))
                records.append(dict(base, condition=f"{share:.0%} faulty rows", alarm=report.drift, named=np.nan))
        for (column, size), values in shifted.items():
            for _ in range(N_SHIFTED):
                report = _test(values, draw(), fresh, det)
                named = bool(report.columns) and report.columns[0].column == column
                records.append(dict(base, condition=f"one column +{size:g} sd", alarm=report.drift, named=named))
    return records


def markdown(frame, fmt="{:.3f}"):
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        cells = [fmt.format(v) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def timing(n_rows=50_000, repeats=2):
    """filter_csv on a Titanic-like CSV with the drift test and without, alternating: median seconds of
    ``repeats`` runs each."""
    from vaefilter.datasets import load_titanic
    from vaefilter.pipeline import filter_csv

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "in.csv")
        make_titanic_csv(path, n_rows)
        det = VAEOutlierDetector(max_epochs=10, handle_missing="model", random_state=0, device="cpu")
        det.fit(load_titanic())
        out = {}
        for alpha in (None, ALPHA) * repeats:
            started = time.perf_counter()
            summary = filter_csv(det, path, os.path.join(tmp, "v.csv"), os.path.join(tmp, "r.csv"), drift_alpha=alpha)
            out.setdefault(alpha, []).append((time.perf_counter() - started, summary.seconds_drift))
    without = float(np.median([t for t, _ in out[None]]))
    with_drift = float(np.median([t for t, _ in out[ALPHA]]))
    drift_part = float(np.median([d for _, d in out[ALPHA]]))
    return dict(n_rows=n_rows, without=without, with_drift=with_drift, drift_part=drift_part,
                repeats=len(out[ALPHA]), report=summary.drift)


def report_text(records, tables, seeds, elapsed, timed, command):
    frame = pd.DataFrame(records)
    lines = [START, "## Drift alarm (bench_drift)", "",
             f"Run: `{command}` — {elapsed:.0f} s at 1 torch thread on the shared 2-core machine. "
             f"Tables {', '.join(tables)}; seeds {seeds}; one model per table and seed (library defaults, "
             "`handle_missing='model'`), calibrated with `calibrate()` on 20% of the rows `fit` never saw; "
             f"batches of m rows from a 30% held-out pool; alpha = {ALPHA}. Protocol: the module docstring.", ""]
    if len(frame):
        order = ["clean"] + [f"{s:.0%} faulty rows" for s in SHARES] + [f"one column +{s:g} sd" for s in SHIFTS]
        summary = (frame.groupby(["condition", "m"])
                   .agg(batches=("alarm", "size"), alarm_rate=("alarm", "mean"), named=("named", "mean"))
                   .reset_index())
        summary["condition"] = pd.Categorical(summary["condition"], order, ordered=True)
        summary = summary.sort_values(["m", "condition"])
        summary["named"] = summary["named"].map(lambda v: "" if np.isnan(v) else f"{v:.2f}")
        summary.columns = ["condition", "m", "batches", "alarm rate", "shifted column named first"]
        lines += ["Alarm rate (false-alarm rate on clean batches, power otherwise), all tables:", "",
                  markdown(summary), ""]
        per_table = (frame.assign(condition=pd.Categorical(frame["condition"], order, ordered=True))
                     .pivot_table(index=["table", "m"], columns="condition", values="alarm", aggfunc="mean",
                                  observed=True).reset_index())
        per_table.columns = [str(c) for c in per_table.columns]
        lines += ["Per table (alarm rate):", "", markdown(per_table, "{:.2f}"), ""]
        clean = frame[frame["condition"] == "clean"]
        checks = (clean.groupby("m").agg(**{
            "clean batches": ("alarm", "size"),
            "alarm, fresh calibration": ("alarm", "mean"),
            "alarm, fit's own validation rows": ("in_fit_alarm", "mean"),
            "lower edge, beta-binomial": ("beta_binomial_alarm", "mean"),
            "lower edge, binomial at k/(n+1)": ("binomial_alarm", "mean"),
        }).reset_index())
        lines += ["False alarms on clean batches by calibration and by lower-edge test (alpha = 0.01):", "",
                  markdown(checks), ""]
    if timed is not None:
        lines += [f"Cost in `filter_csv` on a {timed['n_rows']:,}-row Titanic-like CSV (`_common.make_titanic_csv`, "
                  "K = 100, default architecture, 10 epochs), median of "
                  f"{timed['repeats']} runs each, 1 thread: {timed['without']:.1f} s without the drift test, "
                  f"{timed['with_drift']:.1f} s with it (+{100 * (timed['with_drift'] / timed['without'] - 1):.1f}%; "
                  f"the per-column scoring of the 2000-row sample after the pass: {timed['drift_part']:.2f} s). "
                  f"Memory: 8 bytes a row plus the 2000-row sample.", ""]
    lines.append(END)
    return "\n".join(lines)


def write_section(text):
    current = RESULTS.read_text()
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    updated = pattern.sub(lambda _: text, current) if pattern.search(current) else current.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS.write_text(updated)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="titanic and modechoice, 1 seed, m = 200")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per table (default 1)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[200, 400])
    parser.add_argument("--timing-rows", type=int, default=50_000)
    parser.add_argument("--timing-repeats", type=int, default=2, help="filter runs with and without the test")
    parser.add_argument("--timing-only", action="store_true")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    tables = [] if args.timing_only else list(QUICK_TABLES if args.quick else TABLES)
    seeds = list(range(args.seeds or 1))
    sizes = [200] if args.quick else args.batch_sizes
    started = time.perf_counter()
    records = []
    for seed in seeds:
        for table in tables:
            t = time.perf_counter()
            records += run_model(table, seed, sizes)
            print(f"[{time.perf_counter() - started:5.0f} s] {table} seed {seed}: {time.perf_counter() - t:.0f} s",
                  file=sys.stderr, flush=True)
    timed = None if args.no_timing else timing(args.timing_rows, args.timing_repeats)
    command = "python benchmarks/bench_drift.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report_text(records, tables, seeds, time.perf_counter() - started, timed, command.strip())
    print(text)
    if not args.no_write and not args.quick:
        write_section(text)


if __name__ == "__main__":
    main()
