"""Do the reasons hold when the conditioned deficits take fewer draws?

Question: ``explain`` conditions the likeliest culprits of each row below the
band on the rest of the row, at most ``CONDITIONED_DRAW_SHARE`` of K draws,
and (with ``CONDITIONED_MIN_DEFICIT``) only candidates whose posterior
deficit reaches a floor (vaefilter/estimator.py). Do these savings change
which column a reason names?

Protocol, per table and seed: bench_mixed.py's split and planted faults
(benchmarks/faults.py), a detector fitted as bench_mixed fits it, then
``explain(test)`` (full K, as bench_mixed part (d)) and
``explain(test, sequential=True)`` (the filter's path) once per cap. Reported
per setting: part (d)'s "first named = planted" on the faulty rows rejected
at the 1% threshold, the share of rows below the band whose reason text, or
first named column, equals the uncapped one, and the time of explain.

Usage::

    python benchmarks/check_reasons.py [--tables titanic fair modechoice] [--seeds 1] [--shares 0.3 0.1]
        [--min-deficits 1.0]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

import mixed_tables
import vaefilter.estimator as estimator
from _common import markdown
from bench_mixed import FALSE_REJECTION, first_named_column
from faults import plant_faults
from vaefilter.estimator import VAEOutlierDetector


def explain_with(det, test, settings, sequential):
    """explain() with the estimator's conditioning constants set to ``settings`` (name -> value)."""
    kept = {name: getattr(estimator, name) for name in settings}
    for name, value in settings.items():
        setattr(estimator, name, value)
    try:
        start = time.process_time()
        frame = det.explain(test, sequential=sequential)
        return frame, time.process_time() - start
    finally:
        for name, value in kept.items():
            setattr(estimator, name, value)


def variants(shares, min_deficits):
    """(label, constants) of the reference (no cap, every candidate) and each setting tried."""
    out = [("none", dict(CONDITIONED_DRAW_SHARE=None, CONDITIONED_MIN_DEFICIT=None))]
    out += [(f"share {share}", dict(CONDITIONED_DRAW_SHARE=share, CONDITIONED_MIN_DEFICIT=None)) for share in shares]
    out += [(f"share {shares[0]}, min {m}", dict(CONDITIONED_DRAW_SHARE=shares[0], CONDITIONED_MIN_DEFICIT=m))
            for m in min_deficits]
    return out


def run(tables, seeds, shares, min_deficits=()):
    rows = []
    for table in tables:
        for seed in range(seeds):
            train, test_clean, categorical, numeric, rng = mixed_tables.split(table, seed)
            test, kind, planted, _ = plant_faults(train, test_clean, categorical, numeric, rng)
            det = VAEOutlierDetector(handle_missing="model", random_state=seed, device="cpu").fit(train)
            threshold = np.percentile(det.validation_scores_, FALSE_REJECTION)
            faulty = np.flatnonzero(kind != "")
            for sequential in (False, True):
                reference = None
                for label, settings in variants(shares, min_deficits):
                    frame, seconds = explain_with(det, test, settings, sequential)
                    reasons = frame["reason"].tolist()
                    firsts = [first_named_column(r) for r in reasons]
                    below = np.flatnonzero(frame["log_px"].to_numpy() < det.thresholds_[0])
                    rejected = [i for i in faulty if frame["log_px"].iloc[i] < threshold]
                    first_ok = np.mean([firsts[i] in planted[i] for i in rejected]) if rejected else np.nan
                    if reference is None:
                        reference = (reasons, firsts)
                    rows.append(dict(
                        table=table, seed=seed, mode="sequential" if sequential else "full K",
                        setting=label, first_ok=first_ok, rejected=len(rejected), below=len(below),
                        same_reason=np.mean([reasons[i] == reference[0][i] for i in below]),
                        same_first=np.mean([firsts[i] == reference[1][i] for i in below]),
                        seconds=seconds,
                    ))
                    print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", default=["titanic", "fair", "modechoice"])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.3, 0.1],
                        help="CONDITIONED_DRAW_SHARE values (the first is used with --min-deficits)")
    parser.add_argument("--min-deficits", type=float, nargs="*", default=[1.0],
                        help="CONDITIONED_MIN_DEFICIT values, each with the first share")
    args = parser.parse_args()
    start = time.perf_counter()
    frame = run(args.tables, args.seeds, args.shares, args.min_deficits)
    summary = frame.groupby(["mode", "setting"], sort=False)[["first_ok", "same_reason", "same_first", "seconds"]].mean()
    print(markdown(frame.set_index("table"), "table"))
    print()
    print(markdown(summary.reset_index().set_index("mode"), "mode"))
    print(f"\n{time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
