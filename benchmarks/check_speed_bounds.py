"""What issue 16's speed targets ask, against what the default network's own matmuls and the CSV
handling alone allow on this machine.

Question: could any amount of overhead removal reach "the filter at 25% of pandas read_csv +
to_csv" and "score_samples at 30% of the 4096^3 float32 matmul rate" at the defaults, or does
the work the defaults define already exceed those budgets?

For each mixed-type table (benchmarks/mixed_tables.py, replicated to 60,000 rows as in
``bench_filter.py --real``), fitted at the defaults, in one process and by turns (medians):

* **network rate**: the fitted decoder's and encoder's forward passes (the scoring path's fused
  oneDNN layers) on inputs of the shape one scoring pass uses (``rows_per_pass`` rows x K
  draws), as GFLOP/s and as a share of the 4096^3 matmul; beside it the bare (M x 128) @
  (128 x 128) product of the widest layer. ``score_samples`` cannot beat the network's own rate
  (every draw goes through the decoder), so a share below 30% bounds that target.
* **CSV floor**: ``filter_csv`` with the scoring replaced by a constant decision (every row valid
  at log p(x) = 0, one draw): record splitting, typed parsing, routing and byte-exact writing
  alone, as a share of pandas.
* **filter bound**: pandas' time over (CSV floor + the network time of the rows a real filter run
  pushes through the encoder and the decoder, at the measured network rate): the filter's share
  of pandas were the likelihoods, the draws' noise, the search and every other element-wise
  pass free.

Usage: ``python benchmarks/check_speed_bounds.py [--tables titanic modechoice ...]`` (about 5
minutes on 2 cores). RESULTS.md ``speed_bounds``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from unittest import mock

import vaefilter  # noqa: F401 - first, before torch loads: the OpenMP wait policy the CLI runs with
import numpy as np
import pandas as pd

from _common import matmul_rate
from bench_filter import REAL_TABLES, _median_by_turns, _network_flops, network_work


def _network_times(detector, turns):
    """(decoder s per row, encoder s per row, widest-layer GEMM GFLOP/s) at one scoring pass's shape."""
    import torch

    from vaefilter.model.fused_mlp import mlp_forward
    from vaefilter.scoring.heap import keep_freed_memory
    from vaefilter.scoring.marginal import activation_floats_for, rows_per_pass

    keep_freed_memory()
    network = detector.network_
    K = detector.n_importance_samples
    rows = rows_per_pass(K, network.widest_hidden_layer, activation_floats_for("cpu")) * K
    z = torch.randn(rows, network.latent_dim)
    x = torch.randn(rows, network.encoder[0].in_features)
    width = network.widest_hidden_layer
    a, b = torch.randn(rows, width), torch.randn(width, width)
    with torch.inference_mode():
        decode, encode, gemm = _median_by_turns(
            [lambda: mlp_forward(network.decoder, z), lambda: mlp_forward(network.encoder, x), lambda: a @ b], turns)
    return decode / rows, encode / rows, 2 * rows * width * width / gemm / 1e9


def _csv_floor(detector, big, out, turns):
    """Seconds of filter_csv with the scoring replaced by a constant decision."""
    from vaefilter import pipeline

    def constant(detector_, typed, sequential=False):
        return pd.DataFrame({"log_px": 0.0, "is_valid": True, "reason": "", "p_value": 1.0, "n_draws": 1},
                            index=typed.index)

    valid, invalid = (os.path.join(out, f) for f in ("floor_v.csv", "floor_r.csv"))
    with mock.patch.object(pipeline, "score_table", constant):
        return _median_by_turns([lambda: pipeline.filter_csv(detector, big, valid, invalid, drift_alpha=None)],
                                turns)[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", default=list(REAL_TABLES))
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    import mixed_tables
    from vaefilter.pipeline import filter_csv, fit_csv

    torch.set_num_threads(args.threads)
    peaks = []
    print("| table | decoder GFLOP/s (% of 4096^3) | encoder GFLOP/s | widest-layer GEMM (% of 4096^3) | "
          "pandas s | CSV floor s (share of pandas) | network rows per input row | filter bound / pandas | "
          "filter now / pandas |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as work:
        for name in args.tables:
            frame, _, _ = mixed_tables.load(name)
            small, big = os.path.join(work, f"{name}.csv"), os.path.join(work, f"{name}_big.csv")
            frame.to_csv(small, index=False)
            reps = int(np.ceil(args.rows / len(frame)))
            pd.concat([frame] * reps, ignore_index=True).iloc[: args.rows].to_csv(big, index=False)
            det = fit_csv([small], params={"random_state": 0, "handle_missing": "model"}).detector
            network = det.network_
            # the best of a few runs beside each table's timings: a shared machine's load moves it
            peak = matmul_rate(4096, 4096, 4096, repeats=5)
            peaks.append(peak)
            decode_row, encode_row, gemm = _network_times(det, args.turns)
            dec_rate = _network_flops(network.decoder) / decode_row / 1e9
            enc_rate = _network_flops(network.encoder) / encode_row / 1e9
            v, r, p = (os.path.join(work, f) for f in ("v.csv", "r.csv", "p.csv"))
            pandas_s, filter_s = _median_by_turns(
                [lambda: pd.read_csv(big).to_csv(p, index=False), lambda: filter_csv(det, big, v, r)], args.turns)
            floor_s = _csv_floor(det, big, work, args.turns)
            encoded, decoded, _ = network_work(det, lambda: filter_csv(det, big, v, r))
            bound_s = floor_s + decoded * decode_row + encoded * encode_row
            print(f"| {name} | {dec_rate:.0f} ({dec_rate / peak:.0%}) | {enc_rate:.0f} | {gemm:.0f} ({gemm / peak:.0%}) | "
                  f"{pandas_s:.3f} | {floor_s:.3f} ({pandas_s / floor_s:.0%}) | {decoded / args.rows:.1f} + "
                  f"{encoded / args.rows:.1f} | {pandas_s / bound_s:.1%} | {pandas_s / filter_s:.1%} |", flush=True)
    print(f"\n4096^3 float32 matmul on {args.threads} threads, measured before each table: "
          f"{min(peaks):.0f}-{max(peaks):.0f} GFLOP/s; load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"{time.perf_counter() - t0:.0f} s")
