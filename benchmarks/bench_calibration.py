"""False rejection of clean rows: the band on early-stopping rows vs. on rows held out for it alone.

    .venv/bin/python benchmarks/bench_calibration.py [--seeds N] [--tables a,b] [--cross-fit]

Tables: the mixed-type tables of mixed_tables.py (all seven by default).

Protocol, per table and seed (the split of bench_mixed.py: shuffle, 60% train /
40% test, with the same seeded generator; no faults are planted, every test
row is clean):

* ``before``: ``VAEOutlierDetector(validation_fraction=0.2,
  calibration_fraction=0)``: the split before ``calibration_fraction``
  existed, the band on the 20% early-stopping rows, which also chose the
  epoch and checked the proposal refit;
* ``after``: the defaults (``validation_fraction=0.1, calibration_fraction=0.2``):
  the band on 20% of the train split that no part of the fit saw;

* ``cross-fitted`` (with ``--cross-fit``, instead of ``before``):
  ``calibration_folds=5``, the band on out-of-fold scores of every row of
  the train split, the final network trained on all of it but the
  early-stopping rows;

all with ``handle_missing='model', random_state=seed, device='cpu'``. Each
detector's test scores are computed once; then, from its calibration scores
(``validation_scores_``):

* ``pct1``: the band at percentiles (1, None), the share of clean test rows
  below its edge (the nominal rate is 1%);
* ``pct1 expected``: what exchangeability predicts for that edge,
  (0.01 (n - 1) + 1) / (n + 1) for n calibration rows (np.percentile puts
  the edge at position 0.01 (n - 1) of the sorted scores);
* ``fr1``, ``fr5``: ``calibrate(false_rejection=a)`` one-sided (rank
  threshold), the share of clean test rows below its edge (= the share with
  conformal p-value <= a), for a = 1% and 5%. Where a < 1/(n+1) (fewer than
  99 calibration rows for 1%) the edge is the lowest calibration score and
  the expected rate 1/(n+1), above a (the detector warns).

Clean test rows here are held-out rows of the same table, so they are
exchangeable with the calibration rows up to the split; a table whose clean
rows hold categories or values training never saw makes every rate higher.
Markdown to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import pandas as pd
import torch

import vaefilter
from vaefilter.band import band_from_scores, band_pvalues, conformal_band
from vaefilter.estimator import VAEOutlierDetector

import mixed_tables

SETTINGS = {
    "before": dict(validation_fraction=0.2, calibration_fraction=0.0),
    "after": dict(),
}
CROSS_FIT_SETTINGS = {"after": dict(), "cross-fitted": dict(calibration_folds=5)}


def clean_split(table, seed):
    """bench_mixed.py's train / clean-test split of ``table`` for ``seed``."""
    train, test, _, _, _ = mixed_tables.split(table, seed)
    return train, test


def rates(calibration, test_scores):
    """Shares of clean test rows rejected by the (1, None) band and by p <= a."""
    lower, _ = band_from_scores(calibration, (1, None))
    n = len(calibration)
    # np.percentile's edge sits at position h = 0.01 (n - 1) of the sorted scores; the j-th order
    # statistic leaves j / (n + 1) of exchangeable rows below it, so the edge about (h + 1) / (n + 1)
    out = {"pct1": float(np.mean(test_scores < lower)), "pct1 expected": (0.01 * (n - 1) + 1) / (n + 1)}
    p = band_pvalues(test_scores, calibration, (lower, None))
    for a, name in [(0.01, "fr1"), (0.05, "fr5")]:
        edge, _ = conformal_band(calibration, a, (True, False))
        if a >= 1 / (len(calibration) + 1):  # resolvable: the band and the p-values agree
            assert np.array_equal(test_scores < edge, p <= a)
        out[name] = float(np.mean(test_scores < edge))
    return out


def markdown(frame):
    """A DataFrame as a Markdown table, 3 decimals (no tabulate needed)."""
    head = [frame.index.name or ""] + [str(c) for c in frame.columns]
    rows = [[str(i)] + [f"{v:.3f}" for v in row] for i, row in zip(frame.index, frame.to_numpy())]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--tables", default=",".join(mixed_tables.TABLES))
    parser.add_argument("--cross-fit", action="store_true", help="compare the split with calibration_folds=5")
    args = parser.parse_args(argv)
    settings = CROSS_FIT_SETTINGS if args.cross_fit else SETTINGS
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    records = []
    started = time.perf_counter()
    for table in args.tables.split(","):
        for seed in range(args.seeds):
            train, test = clean_split(table, seed)
            for setting, params in settings.items():
                det = VAEOutlierDetector(handle_missing="model", random_state=seed, device="cpu", **params)
                det.fit(train)
                scores = det.score_samples(test)
                records.append({"table": table, "seed": seed, "setting": setting,
                                "n_cal": len(det.validation_scores_), "n_test": len(test),
                                "test log p(x)": float(np.mean(scores)),
                                **rates(det.validation_scores_, scores)})
                print(records[-1], file=sys.stderr, flush=True)
    frame = pd.DataFrame(records)
    cols = ["pct1", "pct1 expected", "fr1", "fr5", "test log p(x)"]
    per_table = frame.pivot_table(index="table", columns="setting", values=cols, aggfunc="mean")
    per_table.columns = [f"{c} {s}" for c, s in per_table.columns]
    per_table = per_table[[f"{c} {s}" for c in cols for s in settings]]
    pooled = frame.groupby("setting")[cols].mean().loc[list(settings)]
    print(f"vaefilter {vaefilter.__version__}; {args.seeds} seed(s); {time.perf_counter() - started:.0f} s\n")
    print("Share of clean held-out rows rejected, mean over seeds (nominal: pct1 1%, fr1 <= 1%, fr5 <= 5%):\n")
    print(markdown(per_table))
    print("\nMean over tables and seeds:\n")
    print(markdown(pooled))


if __name__ == "__main__":
    main()
