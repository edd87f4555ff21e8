"""Throughput of vaefilter.io.csvio against plain pandas read_csv + to_csv.

Question: does byte-exact chunked reading plus atomic writing keep up with
pandas?  Target: at least half of pandas' rows/s, with flat memory.

Usage::

    python benchmarks/bench_csvio.py [N_ROWS] [--chunk-rows 65536]

Generates a CSV of N_ROWS rows (10 numeric + 2 categorical columns, some
categorical values quoted), then times

* csvio: CsvReader over all chunks (raw records, field checks and the parsed
  object-dtype frame) and writing every record through AtomicWriter;
* pandas: read_csv (default dtype inference) and to_csv of the same file.

Each is run in a fresh subprocess so the reported peak RSS
(resource.getrusage ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def make_csv(path: str, n_rows: int, seed: int = 0) -> None:
    """Write a CSV with 10 numeric and 2 categorical columns."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=n_rows).round(6) for i in range(10)})
    frame["colour"] = rng.choice(["red", "green", "blue", "dark, grey"], size=n_rows)
    frame["city"] = rng.choice(["Oslo", "Zürich", 'Quote "Q"', "Lima"], size=n_rows)
    frame.to_csv(path, index=False)


def run_csvio(src: str, dst: str, chunk_rows: int) -> int:
    from vaefilter.io.csvio import AtomicWriter, CsvReader

    rows = 0
    with CsvReader(src, chunk_rows=chunk_rows) as reader, AtomicWriter(dst) as out:
        out.write(reader.header)
        for chunk in reader:
            rows += len(chunk.frame)
            out.writelines(chunk.records)
    return rows


def run_pandas(src: str, dst: str) -> int:
    import pandas as pd

    frame = pd.read_csv(src)
    frame.to_csv(dst, index=False)
    return len(frame)


def child(which: str, src: str, dst: str, chunk_rows: int) -> None:
    """Time one contestant and print 'seconds rows peak_rss_mib'."""
    import pandas  # noqa: F401  imports are not what is being timed

    if which == "csvio":
        import vaefilter.io.csvio  # noqa: F401
    start = time.perf_counter()
    rows = run_csvio(src, dst, chunk_rows) if which == "csvio" else run_pandas(src, dst)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(seconds, rows, peak_mib)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n_rows", nargs="?", type=int, default=10**6)
    parser.add_argument("--chunk-rows", type=int, default=65536)
    parser.add_argument("--child", nargs=3, metavar=("WHICH", "SRC", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.chunk_rows)
        return
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in.csv")
        make_csv(src, args.n_rows)
        mb = os.path.getsize(src) / 1e6
        print(f"{args.n_rows} rows, {mb:.1f} MB, chunk_rows={args.chunk_rows}")
        print(f"{'reader':<8} {'seconds':>8} {'rows/s':>12} {'MB/s':>8} {'peak RSS MiB':>13}")
        for which in ("csvio", "pandas"):
            dst = os.path.join(tmp, f"out_{which}.csv")
            cmd = [sys.executable, __file__, "--child", which, src, dst, "--chunk-rows", str(args.chunk_rows)]
            seconds, rows, peak = map(float, subprocess.check_output(cmd, text=True).split())
            assert int(rows) == args.n_rows, (which, rows)
            print(f"{which:<8} {seconds:8.2f} {rows / seconds:12,.0f} {mb / seconds:8.1f} {peak:13.0f}")
            if which == "csvio":
                with open(src, "rb") as a, open(dst, "rb") as b:
                    assert a.read() == b.read(), "csvio output is not byte-identical"


if __name__ == "__main__":
    main()
