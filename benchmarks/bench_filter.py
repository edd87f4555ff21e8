"""Throughput and peak memory of `vaefilter filter` against plain pandas read_csv + to_csv.

Question: how many rows (and MB) per second does the gate pass on a
Titanic-like mixed-type CSV, how much memory does it hold, and what does
the number of importance samples K cost?

Usage::

    python benchmarks/bench_filter.py                 # 10^5 and 10^6 rows
    python benchmarks/bench_filter.py --rows 100000   # any list of sizes, e.g. 10000000
    python benchmarks/bench_filter.py --real          # the mixed-type tables, 60,000 rows each
    python benchmarks/bench_filter.py --real titanic --percentiles 1 none   # another band

``--real`` times, in one process and by turns, pandas read_csv + to_csv and
the filter (sequential decisions, at the default ``n_jobs`` and in one
thread, ``n_jobs=1``; then once at full K) on each of
benchmarks/mixed_tables.py's tables replicated to 60,000 rows, fitted at the
defaults; it reports draws per row, the share of rows the posterior search
takes, and the decisions that differ from full K's. It also counts the rows
the encoder and the decoder process in one filter run (decisions, drift
sample, conditioned deficits) and times that many FLOPs at the 4096^3 float32
matmul rate: a ceiling on the filter's share of pandas for this network and
these draws, were every other cost zero.

The input is synthesised from the bundled Titanic table (rows drawn with
replacement, age and fare jittered, the table's missing cells kept, sex and
embarked quoted on a tenth of the rows). One model with the CLI's default
architecture (hidden 128-128, latent 8) is fitted on the Titanic table
(trained for few epochs: training quality does not change the cost) and
copied with K = 10 importance samples. Each measurement runs the console
script (or pandas) in a fresh child process; its wall time and peak RSS
come from os.wait4 for that child alone. The table goes into
benchmarks/RESULTS.md between the bench_filter markers.

10^7 rows: the filter's cost is linear in rows and its memory flat (chunks
of 65536 rows), so 10^7 rows take ten times the 10^6 figure (see the printed
estimate; on the shared 2-core test machine 35-100 min at K=100 and
7-25 min at K=10, depending on the load) and need
about 1 GB of disk for the input and outputs.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import vaefilter  # noqa: F401 - first, before torch loads: the OpenMP wait policy the CLI runs with
import numpy as np

from _common import make_titanic_csv, matmul_rate

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
START, END = "<!-- bench_filter:start -->", "<!-- bench_filter:end -->"


def fit_models(workdir, epochs):
    """Models with the default architecture at K = 100 and K = 10."""
    from vaefilter.datasets import titanic_csv_path

    models = {}
    for k in (100, 10):
        path = os.path.join(workdir, f"model_k{k}.vf")
        subprocess.run(
            [_console(), "fit", str(titanic_csv_path()), "-o", path, "--epochs", str(epochs),
             "--importance-samples", str(k), "-q"],
            check=True, stderr=subprocess.DEVNULL,
        )
        models[k] = path
    return models


def _console():
    script = Path(sys.executable).parent / "vaefilter"
    return str(script) if script.exists() else "vaefilter"


# The measured command runs under this small launcher: on Linux a child's
# ru_maxrss starts from the RSS of the process it was forked from, so forking
# the tool straight from this script (pandas and torch loaded) would add this
# script's ~400 MiB to every figure.
_LAUNCHER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wall = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(dict(wall=wall, rss=rss, code=done.returncode, err=done.stderr.decode(errors="replace")[-500:])))
"""


def measure(command):
    """(wall seconds, peak RSS in MiB, exit code) of the command in a fresh process."""
    import json

    launched = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], capture_output=True, check=True)
    result = json.loads(launched.stdout)
    if result["code"] not in (0, 1):
        raise RuntimeError(f"{command[:3]} failed ({result['code']}): {result['err']}")
    return result["wall"], result["rss"], result["code"]


PANDAS = "import pandas as pd, sys; pd.read_csv(sys.argv[1]).to_csv(sys.argv[2], index=False)"


def run(sizes, workdir, epochs, on_size=None):
    import torch

    models = fit_models(workdir, epochs)
    rows = []
    for n in sizes:
        source = os.path.join(workdir, f"in_{n}.csv")
        t = time.perf_counter()
        size = make_titanic_csv(source, n)
        print(f"{n:,} rows: generated {size / 1e6:.1f} MB in {time.perf_counter() - t:.1f} s", flush=True)
        tools = [("pandas read_csv + to_csv", [sys.executable, "-c", PANDAS, source, os.path.join(workdir, "pd.csv")])]
        for k, model in models.items():
            tools.append((f"vaefilter filter, K={k}",
                          [_console(), "filter", source, "-m", model, "--valid", os.path.join(workdir, "v.csv"),
                           "--invalid", os.path.join(workdir, "r.csv"), "-q"]))
        for name, command in tools:
            wall, rss, _ = measure(command)
            rows.append(dict(tool=name, n=n, mb=size / 1e6, wall=wall, rss=rss))
            print(f"  {name:28s} {wall:8.1f} s  {n / wall:12,.0f} rows/s  {size / 1e6 / wall:7.2f} MB/s  "
                  f"peak RSS {rss:7.0f} MiB", flush=True)
            if name.startswith("vaefilter") and n == max(sizes):
                print(f"    -> 10^7 rows would take about {wall * 1e7 / n / 60:.0f} min", flush=True)
        for leftover in ("pd.csv", "v.csv", "r.csv"):
            if os.path.exists(os.path.join(workdir, leftover)):
                os.remove(os.path.join(workdir, leftover))
        os.remove(source)
        if on_size is not None:
            on_size(rows)  # partial results survive an interrupted long run
    return rows, dict(threads=torch.get_num_threads())


def table(rows, meta, elapsed, note):
    load = os.getloadavg()
    lines = [
        "## Filter throughput (bench_filter)",
        "",
        f"Run: `python benchmarks/bench_filter.py --rows {' '.join(str(n) for n in sorted({r['n'] for r in rows}))}` "
        f"— wall time {elapsed:.0f} s.  ",
        f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}), no GPU; Python {platform.python_version()}; "
        f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min).  ",
        f"{note}  ",
        "Input: Titanic-like mixed-type CSV (8 columns: 6 numeric with missing cells, 2 categorical, some quoted), "
        "about 28 bytes per row. Model: CLI default architecture (hidden 128-128, latent 8). Every tool runs in a "
        "fresh child process; time includes interpreter start, imports and model load (~2-10 s). "
        "Peak RSS is the child's ru_maxrss.",
        "",
        "| rows | tool | wall s | rows/s | MB/s | peak RSS MiB |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['tool']} | {r['wall']:.1f} | {r['n'] / r['wall']:,.0f} | "
                     f"{r['mb'] / r['wall']:.2f} | {r['rss']:.0f} |")
    lines.append("")
    return "\n".join(lines)


def write_section(text):
    block = f"{START}\n{text}\n{END}"
    current = RESULTS.read_text() if RESULTS.exists() else "# vaefilter benchmark results\n"
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if pattern.search(current):
        updated = pattern.sub(lambda _: block, current)
    else:
        updated = current.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(updated)


REAL_TABLES = ("titanic", "penguins", "cars", "seattle_weather", "fair", "anes96", "modechoice")


def _median_by_turns(functions, turns):
    """Median wall time of each function, the functions called in turn ``turns`` times (a shared machine)."""
    times = [[] for _ in functions]
    for _ in range(turns):
        for spent, function in zip(times, functions):
            t0 = time.perf_counter()
            function()
            spent.append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def _network_flops(module):
    """FLOPs of one row through ``module``'s linear layers (multiply and add)."""
    import torch

    return sum(2 * m.in_features * m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear))


def network_work(detector, run):
    """(encoder rows, decoder rows, GFLOP) of ``run()``: every row the network's encode and decode see."""
    from unittest import mock

    from vaefilter.model.network import VAENetwork

    seen = {"encode": 0, "decode": 0}

    def counting(name):
        original = getattr(VAENetwork, name)

        def method(self, tensor):
            seen[name] += tensor.reshape(-1, tensor.shape[-1]).shape[0]
            return original(self, tensor)
        return method

    with mock.patch.object(VAENetwork, "encode", counting("encode")), \
            mock.patch.object(VAENetwork, "decode", counting("decode")):
        run()
    network = detector.network_
    flops = seen["encode"] * _network_flops(network.encoder) + seen["decode"] * _network_flops(network.decoder)
    return seen["encode"], seen["decode"], flops / 1e9


def real_tables(tables, workdir, rows=60_000, turns=3, threads=2, training_samples=None, percentiles=None):
    """The filter on the mixed-type benchmark's tables, replicated to ``rows`` rows, beside pandas.

    In one process, by turns: pandas read_csv + to_csv of the file, and
    ``filter_csv`` (the CLI's path; the model loaded once). Decisions of the
    sequential run against full K are compared on the table's distinct rows
    (a row's decision is a function of the row alone, so the replicated
    file has the same share of disagreements). ``training_samples`` (default:
    the estimator's) sets the training loss, 1 for the ELBO; ``percentiles`` (default: the
    estimator's (25, 75)) the band, e.g. ``(1, None)``.
    """
    import pandas as pd
    import torch

    import mixed_tables
    from vaefilter.pipeline import filter_csv, fit_csv

    torch.set_num_threads(threads)
    peak = matmul_rate(4096, 4096, 4096, repeats=3)
    out = []
    for name in tables:
        frame, _, _ = mixed_tables.load(name)
        small, big = os.path.join(workdir, f"{name}.csv"), os.path.join(workdir, f"{name}_big.csv")
        frame.to_csv(small, index=False)
        reps = int(np.ceil(rows / len(frame)))
        pd.concat([frame] * reps, ignore_index=True).iloc[:rows].to_csv(big, index=False)
        t0 = time.perf_counter()
        params = {"random_state": 0, "handle_missing": "model"}
        if training_samples is not None:
            params["training_samples"] = training_samples
        if percentiles is not None:
            params["threshold_percentiles"] = percentiles
        det = fit_csv([small], params=params).detector
        fit_s = time.perf_counter() - t0
        v, r, pd_out = (os.path.join(workdir, f) for f in ("v.csv", "r.csv", "pd.csv"))
        with open(big, "rb") as f:
            n_lines = sum(1 for _ in f) - 1
        # the same model scoring in one thread (torch's intra-op threads only), as before n_jobs
        one_thread = copy.deepcopy(det).set_params(n_jobs=1)
        pandas_s, filter_s, one_thread_s = _median_by_turns(
            [lambda: pd.read_csv(big).to_csv(pd_out, index=False), lambda: filter_csv(det, big, v, r),
             lambda: filter_csv(one_thread, big, v, r)], turns)
        t0 = time.perf_counter()
        filter_csv(det, big, v, r, full_k=True)
        full_s = time.perf_counter() - t0
        encoded, decoded, gflop = network_work(det, lambda: filter_csv(det, big, v, r))
        # decisions and draws on the distinct rows, sequential against full K
        from vaefilter.io.texttypes import parse_text_table

        text = pd.read_csv(small, dtype=str, keep_default_na=False)
        typed, problems = parse_text_table(text, det.schema_)
        typed = typed.drop(index=list(problems))
        seq = det.explain(typed, sequential=True)
        full = det.explain(typed)
        X_model = det.schema_.encode(typed)
        searched_seq = det._decide(X_model).searched
        searched_full = det._log_marginal(X_model).searched
        out.append(dict(
            table=name, rows=n_lines, columns=frame.shape[1], fit_s=fit_s, pandas_s=pandas_s, filter_s=filter_s,
            full_s=full_s, share=pandas_s / filter_s, full_share=pandas_s / full_s,
            one_thread_s=one_thread_s, one_thread_share=pandas_s / one_thread_s,
            disagree=int((seq["is_valid"] != full["is_valid"]).sum()), distinct=len(typed),
            draws=float(seq["n_draws"].mean()), K=det.n_importance_samples,
            searched_full=float(np.mean(searched_full)) if searched_full is not None else 0.0,
            searched_seq=float(np.mean(searched_seq)) if searched_seq is not None else 0.0,
            decoded_per_row=decoded / n_lines, gflop=gflop, matmul=peak,
            ceiling=pandas_s / (gflop / peak), load=os.getloadavg()[0],
        ))
        row = out[-1]
        print(f"{name:16s} {row['rows']:,} rows: pandas {pandas_s:.2f} s, filter {filter_s:.2f} s "
              f"({row['share']:.1%} of pandas), one thread {one_thread_s:.2f} s ({row['one_thread_share']:.1%}), "
              f"full K {full_s:.2f} s ({row['full_share']:.1%}); "
              f"disagreements {row['disagree']}/{row['distinct']}, draws/row {row['draws']:.1f} of {row['K']}, "
              f"searched {row['searched_full']:.1%} (full K) / {row['searched_seq']:.1%} (sequential); "
              f"decoded {row['decoded_per_row']:.1f}/row, {gflop:.0f} GFLOP: ceiling {row['ceiling']:.0%} of pandas; "
              f"load {row['load']:.1f}", flush=True)
    return out


def real_table_markdown(rows, command, elapsed, threads):
    load = os.getloadavg()
    lines = [
        f"Run: `{command}` — {elapsed:.0f} s; torch threads {threads}; load average at the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (2 cores shared with other jobs).",
        "",
        "| table | cols | rows | pandas s | filter s | filter rows/s | filter / pandas | full-K filter s | "
        "full-K / pandas | draws/row (of K) | searched, full K | searched, sequential | decisions ≠ full K | "
        "decoded/row | network GFLOP | ceiling / pandas | load | filter s, n_jobs=1 | n_jobs=1 / pandas |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['table']} | {r['columns']} | {r['rows']:,} | {r['pandas_s']:.2f} | {r['filter_s']:.2f} | "
                     f"{r['rows'] / r['filter_s']:,.0f} | {r['share']:.1%} | {r['full_s']:.2f} | {r['full_share']:.1%} | "
                     f"{r['draws']:.1f} ({r['K']}) | {r['searched_full']:.1%} | {r['searched_seq']:.1%} | "
                     f"{r['disagree']} of {r['distinct']} | {r['decoded_per_row']:.1f} | {r['gflop']:.0f} | "
                     f"{r['ceiling']:.0%} | {r['load']:.1f} | {r['one_thread_s']:.2f} | {r['one_thread_share']:.1%} |")
    lines += ["", f"decoded/row: rows through the decoder per input row in one filter run (the decisions' draws, "
              f"the drift sample at full K, the conditioned deficits). ceiling / pandas: pandas' time over the "
              f"time of those encoder and decoder FLOPs at the {rows[0]['matmul']:.0f} GFLOP/s of a 4096^3 float32 "
              f"matmul ({threads} threads): the filter's share of pandas could not exceed it with every other "
              f"cost at zero."] if rows else []
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="input sizes (default 10^5 and 10^6; 10^7 takes hours, see the module docstring)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of the benchmark model")
    parser.add_argument("--note", default="The machine was shared with other jobs during the run; "
                                           "treat the figures as lower bounds.",
                        help="a line printed with the table")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--real", nargs="*", metavar="TABLE",
                        help=f"instead: the mixed-type tables replicated to 60,000 rows (default all: {REAL_TABLES})")
    parser.add_argument("--turns", type=int, default=3, help="with --real: timing turns (medians)")
    parser.add_argument("--threads", type=int, default=2, help="with --real: torch threads")
    parser.add_argument("--training-samples", type=int, default=None, metavar="K",
                        help="with --real: fit with this training loss (1: the ELBO) instead of the default")
    parser.add_argument("--percentiles", nargs=2, metavar=("LOW", "HIGH"), default=None,
                        help="with --real: the band's percentiles instead of the default (25 75); 'none' for no edge")
    args = parser.parse_args()
    start = time.perf_counter()
    band = None if args.percentiles is None else tuple(
        None if p.lower() == "none" else float(p) for p in args.percentiles)
    if args.real is not None:
        with tempfile.TemporaryDirectory(prefix="bench_filter_") as workdir:
            rows = real_tables(args.real or REAL_TABLES, workdir, turns=args.turns, threads=args.threads,
                               training_samples=args.training_samples, percentiles=band)
        options = "" if args.training_samples is None else f" --training-samples {args.training_samples}"
        options += "" if args.percentiles is None else " --percentiles " + " ".join(args.percentiles)
        command = (f"python benchmarks/bench_filter.py --turns {args.turns} --threads {args.threads}{options} --real "
                   + " ".join(args.real))
        print(real_table_markdown(rows, command.strip(), time.perf_counter() - start, args.threads))
        return
    def save(rows):
        if not args.no_write:
            write_section(table(rows, None, time.perf_counter() - start, args.note))

    with tempfile.TemporaryDirectory(prefix="bench_filter_") as workdir:
        rows, meta = run(args.rows, workdir, args.epochs, on_size=save)
    text = table(rows, meta, time.perf_counter() - start, args.note)
    print()
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
