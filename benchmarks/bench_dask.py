"""Speed-up of ``vaefilter.dask.filter_files`` from 1 to 2 local Dask workers.

Question: when many CSV files are filtered one task per file, how much does a
second worker process buy on this machine?

Usage::

    python benchmarks/bench_dask.py [--files 8] [--rows 50000] [--workers 1 2]

Generates ``--files`` CSV files of ``--rows`` rows (4 numeric columns, one
categorical), trains a model with the default architecture (hidden (128,
128), latent 8, K=100 importance samples) for a few epochs on 5000 rows (a
small trained model: training time is not the question), then for each worker
count starts a ``distributed.LocalCluster`` of worker processes with one
thread each, and times ``filter_files`` over all files (cluster start-up is
timed separately and not included). Every output is checked: valid + invalid
records add up to the input's.

Torch runs with 1 intra-op thread per worker: with 2 workers on 2 cores,
torch's default (one OpenMP thread per core in *each* process) would put 4
spinning threads on 2 cores, and OpenMP slows down badly when oversubscribed
(see bench_speed: 2 threads are already slower than 1 on this shared
machine). With 1 thread per worker, 1 -> 2 workers measures the parallelism of
the file-level tasks alone.

Writes a markdown table into RESULTS.md between ``<!-- bench_dask:start -->``
and ``<!-- bench_dask:end -->``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import tempfile
import time

import numpy as np
import pandas as pd


from _common import machine_line, md_table, write_section


def make_csv(path, n_rows, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n_rows, 2))
    frame = pd.DataFrame({
        "amount": (100 + 20 * z[:, 0]).round(2),
        "fee": (2 + 0.4 * z[:, 0] + 0.1 * rng.normal(size=n_rows)).round(3),
        "duration": (30 + 5 * z[:, 1]).round(1),
        "score": (z[:, 0] - z[:, 1] + 0.2 * rng.normal(size=n_rows)).round(4),
        "channel": rng.choice(["web", "store", "phone, fax"], size=n_rows),
    })
    anomalies = rng.random(n_rows) < 0.01
    frame.loc[anomalies, "fee"] *= 10
    frame.to_csv(path, index=False)


def _warm_up():
    """Import torch and vaefilter in a worker, so the first task does not pay for it."""
    import vaefilter.cli  # noqa: F401
    import vaefilter.dask  # noqa: F401
    import vaefilter.estimator  # noqa: F401


def _timed_filter_file(*args, **kwargs):
    """filter_file, plus the task's wall and CPU seconds and its worker."""
    import distributed

    from vaefilter.dask import filter_file

    wall, cpu = time.perf_counter(), time.process_time()
    result = filter_file(*args, **kwargs)
    result["wall_s"], result["cpu_s"] = time.perf_counter() - wall, time.process_time() - cpu
    result["worker"] = distributed.get_worker().address
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=int, default=5, help="training epochs of the small model")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = p.parse_args()

    import distributed
    import torch

    from vaefilter import VAEOutlierDetector, cli
    from vaefilter.dask import filter_files
    from vaefilter.persistence import load_model

    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = []
        for i in range(args.files):
            path = os.path.join(tmp, "in", f"day{i:02d}.csv")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            make_csv(path, args.rows, seed=i)
            inputs.append(path)
        train = os.path.join(tmp, "train.csv")
        make_csv(train, 5000, seed=1000)
        model = os.path.join(tmp, "model.vaef")
        t0 = time.perf_counter()
        assert cli.main(["fit", train, "-o", model, "--epochs", str(args.epochs), "-q"]) == 0
        fit_s = time.perf_counter() - t0
        detector = load_model(model)
        sizes = (len(pickle.dumps(VAEOutlierDetector())), len(pickle.dumps(detector)), os.path.getsize(model))

        rows, timings = [], {}
        total_rows = args.files * args.rows
        for n in args.workers:
            t0 = time.perf_counter()
            with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                          dashboard_address=None) as cluster, distributed.Client(cluster) as client:
                client.wait_for_workers(n)
                client.run(_warm_up)
                startup = time.perf_counter() - t0
                out = os.path.join(tmp, f"out{n}")
                t0 = time.perf_counter()
                results = filter_files(model, os.path.join(tmp, "in", "*.csv"), os.path.join(out, "valid-*.csv"),
                                       os.path.join(out, "invalid-*.csv"), scheduler=client, torch_threads=1,
                                       file_task=_timed_filter_file)
                elapsed = time.perf_counter() - t0
            assert sum(r["n_valid"] + r["n_invalid"] for r in results) == total_rows
            timings[n] = elapsed
            n_invalid = sum(r["n_invalid"] for r in results)
            cpu = sum(r["cpu_s"] for r in results)
            used = len({r["worker"] for r in results})
            rows.append([n, f"{startup:.1f}", f"{elapsed:.1f}", f"{total_rows / elapsed:,.0f}",
                         f"{timings[args.workers[0]] / elapsed:.2f}x", used, f"{cpu:.0f}", f"{cpu / elapsed:.2f}",
                         f"{n_invalid / total_rows:.1%}"])
            print(f"{n} worker(s): {elapsed:.1f} s ({total_rows / elapsed:,.0f} rows/s), cluster start {startup:.1f} s",
                  flush=True)
    wall = time.perf_counter() - started

    table = md_table(["workers", "cluster start + imports (s)", "filter_files (s)", "rows/s", "speed-up", "workers used",
                      "task CPU (s)", "cores obtained (CPU s / wall s)", "rejected (band 25-75)"], rows)
    body = "\n".join([
        "## Scaling out with Dask (bench_dask)",
        "",
        f"Run: `python benchmarks/bench_dask.py --files {args.files} --rows {args.rows}` — "
        f"{args.files} CSV files x {args.rows:,} rows (4 numeric + 1 categorical column), wall time {wall:.0f} s.  ",
        machine_line() + "  ",
        "The machine is shared with other engineers' jobs (load average well above 2 during the run), "
        "so timings carry noise of tens of %.",
        "",
        f"Model: default architecture (hidden (128, 128), latent 8, K=100), trained {args.epochs} epochs on "
        f"5,000 rows ({fit_s:.0f} s). `filter_files` on a `distributed.LocalCluster` of worker processes, "
        "one thread each, torch limited to 1 intra-op thread per worker (no oversubscription of the 2 cores); "
        "one task per file, each the single-file `vaefilter filter` path (byte-exact, atomic outputs). "
        "Cluster start-up (and importing torch in each worker) is not in the filter time. "
        "*Cores obtained* is the tasks' summed CPU time over the wall time: how much of the 2 cores the "
        "workers actually got while other jobs ran; the speed-up cannot exceed it.",
        "",
        table,
        "",
        f"Pickled size (`pickle.dumps`): unfitted detector {sizes[0]:,} bytes; fitted (default architecture, "
        f"CPU state dict) {sizes[1]:,} bytes; safe model file {sizes[2]:,} bytes. "
        "Shipping a model to a worker costs well under a megabyte.",
    ])
    uptime = os.getloadavg()
    body += f"\n\nLoad average at the end of the run: {uptime[0]:.1f} (1 min), {uptime[1]:.1f} (5 min) on 2 cores."
    print(body)
    if not args.no_write:
        write_section("bench_dask", body)


if __name__ == "__main__":
    main()
