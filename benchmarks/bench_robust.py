"""Training data with a few bad rows: vaefilter with and without ``trim_fraction=``.

    .venv/bin/python benchmarks/bench_robust.py            # report tables, 2 seeds (~10 min at 1 thread)
    .venv/bin/python benchmarks/bench_robust.py --tune     # the warm-up study on the tuning tables

Tables (mixed_tables.py): the warm-up (``TRIM_WARMUP_EPOCHS``) was chosen with
``--tune`` on titanic and penguins only; the report runs on cars,
seattle_weather, anes96 and modechoice (fair, 5000 rows, is left out for
time).

Protocol, per table and seed
----------------------------
* the split and the test set of bench_mixed.py: shuffle, 60% train / 40%
  test, one planted fault in a random half of the test rows (the seven
  kinds in rotation, planted relative to the clean training rows);
* a dirty copy of the training rows for each planted share s in 1%, 5%,
  10%: one fault (the same seven kinds in rotation, the same planter) in
  round(s * n_train) random training rows. The dirty rows change the schema
  as real ones would: a typo is a new category, a missing cell makes a column
  'missing modelled', a negative value makes a positive column continuous;
* fits (``VAEOutlierDetector(handle_missing='model', max_epochs=100,
  random_state=seed, device='cpu')``, library defaults otherwise; 100 epochs
  cap runs that early stopping ends near 100 anyway): the clean training
  rows with and without ``trim_fraction=0.05``; each dirty copy without it,
  with ``trim_fraction=s`` and (s != 5%) the mis-set ``trim_fraction=0.05``;
* figures on the test rows: ROC-AUC of -log p(x) (clean vs faulty test
  rows); detection and false rejection of the detector's own 1% threshold
  (the 1st percentile of ``validation_scores_``, which trim_fraction
  computes without its lowest share); detection at exactly 1% false
  rejection (the 1st percentile of log p(x) of the clean test rows, an
  oracle threshold that isolates the ranking); the mean log p(x) of the
  clean test rows; and, for the dirty fits, the share of the planted
  training rows that were set aside or excluded from calibration ("caught")
  and the share of the set-aside and excluded rows that were planted
  ("precision").

Markdown to stdout and benchmarks/out/bench_robust.md (bench_robust_tune.md
with --tune).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

import vaefilter
import vaefilter.model.training
from vaefilter.estimator import VAEOutlierDetector

from faults import KINDS, plant_faults
from _common import markdown
import mixed_tables

SHARES = (0.01, 0.05, 0.10)
MIS_SET = 0.05
TUNE_TABLES = ("titanic", "penguins")
REPORT_TABLES = ("cars", "seattle_weather", "anes96", "modechoice")
TUNE_WARMUPS = (0, 5, 20)
FALSE_REJECTION = 1.0  # percent
MAX_EPOCHS = 100
OUT_DIR = Path(__file__).resolve().parent / "out"


def split(table, seed):
    """bench_mixed's split and faulty test set, plus dirty training copies per share."""
    train, test_clean, categorical, numeric, rng = mixed_tables.split(table, seed)
    n_train = len(train)
    test, kind, _, _ = plant_faults(train, test_clean, categorical, numeric, rng)
    dirty = {}
    for share in SHARES:
        n_bad = int(round(share * n_train))
        copy, train_kind, _, _ = plant_faults(train, train, categorical, numeric, rng, n_faulty=n_bad)
        dirty[share] = (copy, train_kind)
    return train, test, kind, dirty


def evaluate(det, test, kind, planted_kind=None):
    log_px = det.score_samples(test)
    clean = kind == ""
    own = np.percentile(det.validation_scores_, FALSE_REJECTION)
    oracle = np.percentile(log_px[clean], FALSE_REJECTION)
    out = {
        "auc": roc_auc_score(~clean, -log_px),
        "det_own": float((log_px[~clean] < own).mean()),
        "frr_own": float((log_px[clean] < own).mean()),
        "det_1pct": float((log_px[~clean] < oracle).mean()),
        "clean_log_px": float(log_px[clean].mean()),
    }
    for k in KINDS:
        rows = kind == k
        keep = clean | rows
        out[f"auc_{k}"] = roc_auc_score(rows[keep], -log_px[keep])
    if planted_kind is not None:
        planted = planted_kind != ""
        flagged = np.union1d(det.training_set_aside_, det.calibration_excluded_).astype(int)
        caught = np.isin(np.arange(len(planted)), flagged)
        out["caught"] = float(caught[planted].mean())
        out["precision"] = float(planted[flagged].mean()) if len(flagged) else np.nan
        for k in KINDS:
            rows = planted_kind == k
            out[f"caught_{k}"] = float(caught[rows].mean()) if rows.any() else np.nan
    return out


def fit(train, seed, trim):
    return VAEOutlierDetector(handle_missing="model", max_epochs=MAX_EPOCHS, random_state=seed, device="cpu",
                              trim_fraction=trim).fit(train)


REFIT = "s, then refit"


def refit_without_set_aside(frame, seed, share):
    """What a second pass would win: fit with trim_fraction=share, drop the rows it set aside or
    excluded, and fit afresh (schema included) on the rest without trimming. Not a library feature."""
    first = fit(frame, seed, share)
    dropped = np.union1d(first.training_set_aside_, first.calibration_excluded_).astype(int)
    kept = frame.drop(index=dropped).reset_index(drop=True)
    for c in kept.columns:
        if isinstance(kept[c].dtype, pd.CategoricalDtype):
            kept[c] = kept[c].cat.remove_unused_categories()
        elif kept[c].notna().all() and kept[c].dtype.kind == "f" and np.all(np.mod(kept[c], 1) == 0):
            kept[c] = kept[c].astype("int64")  # a column a planted missing cell had made float
    second = fit(kept, seed, None)
    # the caught figures are the first pass's
    second.training_set_aside_, second.calibration_excluded_ = first.training_set_aside_, first.calibration_excluded_
    return second


def run_split(table, seed, shares, arms):
    """Records for one table and seed; ``arms(share)`` lists the trim_fraction values to fit."""
    train, test, kind, dirty = split(table, seed)
    records = []
    base = {"table": table, "seed": seed}
    for trim in arms(0.0):
        records.append({**base, "train": "clean", "share": 0.0, "trim": trim, **evaluate(fit(train, seed, trim), test, kind)})
    for share in shares:
        frame, planted_kind = dirty[share]
        for trim in arms(share):
            if trim == REFIT:
                det = refit_without_set_aside(frame, seed, share)
            else:
                det = fit(frame, seed, trim)
            records.append({**base, "train": "dirty", "share": share, "trim": trim,
                            **evaluate(det, test, kind, planted_kind)})
    return records


# ------------------------------------------------------------------ report
def arm_label(row):
    trim = "none" if row.trim is None else row.trim if isinstance(row.trim, str) else f"{row.trim:g}"
    return f"{row.train} {row.share:.0%}, trim_fraction={trim}"


def report(rec, title, tables, seeds, elapsed):
    rec = rec.copy()
    rec["trim"] = rec["trim"].astype(object).where(rec["trim"].notna(), None)
    rec["arm"] = [arm_label(r) for r in rec.itertuples()]
    arms = list(dict.fromkeys(rec.sort_values(["share", "train"], kind="stable").arm))
    metrics = ["auc", "det_1pct", "det_own", "frr_own", "clean_log_px", "caught", "precision"]
    summary = rec.groupby("arm")[metrics].mean().reindex(arms)
    per_table = rec.groupby(["arm", "table"]).auc.mean().unstack().reindex(arms)[list(tables)]
    kinds = [f"auc_{k}" for k in KINDS]
    per_kind = rec.groupby("arm")[kinds].mean().reindex(arms)
    per_kind.columns = list(KINDS)
    caught_cols = [f"caught_{k}" for k in KINDS]
    trimmed = rec[rec.trim.notna() & (rec.train == "dirty")]
    caught = trimmed.groupby("arm")[caught_cols].mean().reindex([a for a in arms if a in set(trimmed.arm)])
    caught.columns = list(KINDS)
    parts = [
        title, "",
        f"Tables: {', '.join(tables)}; seeds: {', '.join(map(str, seeds))}. Run time {elapsed:.0f} s "
        f"({elapsed / 60:.1f} min) on {torch.get_num_threads()} torch thread(s); max_epochs={MAX_EPOCHS}; "
        f"TRIM_WARMUP_EPOCHS={vaefilter.model.training.TRIM_WARMUP_EPOCHS}. vaefilter imported from "
        f"{Path(vaefilter.__file__).parent}.", "",
        "Mean over tables and seeds. auc: ROC-AUC of -log p(x), clean vs faulty test rows; det@1%: detection at "
        "exactly 1% false rejection of the clean test rows (oracle threshold); det own / FRR own: detection and "
        "false rejection at the 1st percentile of validation_scores_; clean log p: mean log p(x) of clean test "
        "rows (nats); caught: planted training rows set aside or excluded from calibration; precision: planted "
        "share of those set aside or excluded.", "",
        markdown(summary.rename(columns={"det_1pct": "det@1%", "det_own": "det own", "frr_own": "FRR own",
                                                     "clean_log_px": "clean log p"}), "training rows"), "",
        "ROC-AUC per table:", "", markdown(per_table, "training rows"), "",
        "ROC-AUC per fault kind (of the test rows):", "", markdown(per_kind, "training rows"), "",
        "Planted training rows set aside or excluded from calibration, per fault kind:", "",
        markdown(caught, "training rows"), "",
    ]
    return "\n".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune", action="store_true", help=f"warm-ups {TUNE_WARMUPS} on {', '.join(TUNE_TABLES)}")
    parser.add_argument("--refit", action="store_true",
                        help="only the two-pass refit (a benchmark-only arm); compare with the main run, same splits")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 2; 1 with --tune)")
    parser.add_argument("--tables", nargs="+", choices=sorted(mixed_tables.TABLES), default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    seeds = list(range(args.seeds if args.seeds is not None else (1 if args.tune else 2)))
    tables = args.tables or list(TUNE_TABLES if args.tune else REPORT_TABLES)
    out = args.out or OUT_DIR / ("bench_robust_tune.md" if args.tune else
                                 "bench_robust_refit.md" if args.refit else "bench_robust.md")
    start = time.perf_counter()
    texts = []
    if args.tune:
        # the baselines once, then the trimmed fits at each warm-up
        records = []
        for seed in seeds:
            for table in tables:
                records += run_split(table, seed, (0.05, 0.10), lambda share: [None])
                print(f"[{time.perf_counter() - start:6.0f} s] {table} seed {seed}: baselines", file=sys.stderr, flush=True)
        base = pd.DataFrame(records)
        for warmup in TUNE_WARMUPS:
            vaefilter.model.training.TRIM_WARMUP_EPOCHS = warmup
            trimmed = []
            for seed in seeds:
                for table in tables:
                    trimmed += run_split(table, seed, (0.05, 0.10), lambda share: [share] if share else [])
                    print(f"[{time.perf_counter() - start:6.0f} s] {table} seed {seed}: warm-up {warmup}",
                          file=sys.stderr, flush=True)
            rec = pd.concat([base, pd.DataFrame(trimmed)], ignore_index=True)
            texts.append(report(rec, f"## warm-up {warmup} epochs", tables, seeds, time.perf_counter() - start))
    elif args.refit:
        records = []
        for seed in seeds:
            for table in tables:
                records += run_split(table, seed, SHARES, lambda share: [REFIT] if share else [])
                print(f"[{time.perf_counter() - start:6.0f} s] {table} seed {seed}", file=sys.stderr, flush=True)
        texts.append(report(pd.DataFrame(records), "# Two-pass refit (bench_robust.py --refit)",
                            tables, seeds, time.perf_counter() - start))
    else:
        records = []
        for seed in seeds:
            for table in tables:
                records += run_split(table, seed, SHARES,
                                     lambda share: [None, MIS_SET] if share == 0 else
                                     [None, share] + ([MIS_SET] if share != MIS_SET else []))
                print(f"[{time.perf_counter() - start:6.0f} s] {table} seed {seed}", file=sys.stderr, flush=True)
        texts.append(report(pd.DataFrame(records), "# Training data with planted faults (bench_robust.py)",
                            tables, seeds, time.perf_counter() - start))
    text = "\n".join(texts)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"(written to {out})", file=sys.stderr)


if __name__ == "__main__":
    main()
