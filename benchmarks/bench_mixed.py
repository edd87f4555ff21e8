"""Mixed-type detection: planted single-cell faults in real tables.

    .venv/bin/python benchmarks/bench_mixed.py [--quick] [--seeds N]

Tables (see mixed_tables.py): titanic, palmerpenguins, vega-datasets' cars
and seattle-weather, statsmodels' fair, anes96 and modechoice, all shipped
inside pip packages (``pip install -e .[bench]``). ``--quick``: one seed and
the three small tables (titanic, penguins, cars).

Protocol, per table and seed
----------------------------
* shuffle, 60% train / 40% test;
* in a random half of the test rows plant exactly one fault per row, the
  seven kinds in balanced rotation (the faulty rows are in random order):

  - ``unit``: a numeric cell x1000 or /100 (coin flip), on a non-zero cell;
  - ``swap``: two numeric cells of the row with different values exchanged;
  - ``typo``: a categorical cell replaced by a misspelling of itself (two
    adjacent characters swapped, one dropped or one doubled) that is not a
    training category;
  - ``impossible``: a negative value in a column never negative in training
    (-x, or -1 for x == 0), else max + 10 (max - min) of the training range;
  - ``missing``: a missing cell in a column never missing in training;
  - ``ctx_numeric``: a numeric cell replaced by the same column's value in a
    random training row where it differs by at least one training standard
    deviation;
  - ``ctx_category``: a categorical cell replaced by the same column's value
    in a random training row where it is another category;

  the planted column is recorded (both columns for ``swap``); "training" here
  is the 60% train split;
* methods, none of which sees a label:

  - vaefilter: ``VAEOutlierDetector(handle_missing='model', random_state=seed,
    device='cpu')`` (library defaults otherwise) on the training DataFrame,
    categorical columns as pandas 'category'; score = -score_samples; the
    1% threshold is the 1st percentile of ``validation_scores_`` (the
    detector's own held-out calibration rows);
  - rules: ``pandera.infer_schema`` on the training DataFrame (dtype,
    nullable, min/max per numeric column, ``isin`` of the training
    categories per categorical column); score = the number of distinct
    (column, check) failures of the row in ``validate(lazy=True)``'s
    failure cases; rejected if any;
  - IsolationForest, LocalOutlierFactor(novelty=True), GaussianMixture (BIC
    over 1, 2, 4, 8 full-covariance components), PyOD's VAE and AutoEncoder
    (their defaults: 30 and 10 epochs) on one matrix: numeric columns
    median-imputed plus a missing indicator for EVERY numeric column (not
    only those with missing training cells, so that a missing cell in a
    never-missing column is visible to them), standardised; categorical
    columns one-hot (missing is its own category when training has it,
    unknown categories -> all zeros). They are fitted on the first 80% of
    the train split; the last 20% is held out and each method's 99th
    percentile of score there is its 1% threshold.

Report: ROC-AUC per table and per fault kind (a kind's AUC: clean test rows
vs the test rows with that fault), detection at the 1% thresholds, and how
often vaefilter's explanation names the planted column. Markdown to stdout
and to benchmarks/out/bench_mixed.md (bench_mixed_quick.md with --quick).
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
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import IsolationForest
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import vaefilter
from vaefilter.estimator import VAEOutlierDetector

# mixed_tables.py lives beside this file; benchmarks/ is not a package
sys.path.insert(0, str(Path(__file__).resolve().parent))
import mixed_tables  # noqa: E402

KINDS = ("unit", "swap", "typo", "impossible", "missing", "ctx_numeric", "ctx_category")
CONTEXTUAL = ("ctx_numeric", "ctx_category")
METHODS = ("vaefilter", "rules", "IsolationForest", "LOF", "GMM", "PyOD VAE", "PyOD AE")
TRAIN_SHARE = 0.6
PEER_FIT_SHARE = 0.8  # of the train split; the rest calibrates the peers' thresholds
FALSE_REJECTION = 1.0  # percent
OUT_DIR = Path(__file__).resolve().parent / "out"


# ------------------------------------------------------------------ faults
def misspellings(value):
    """Adjacent swaps, single deletions and single doublings of a string."""
    out = set()
    for i in range(len(value) - 1):
        out.add(value[:i] + value[i + 1] + value[i] + value[i + 2 :])
    for i in range(len(value)):
        out.add(value[:i] + value[i + 1 :])
        out.add(value[:i] + value[i] + value[i:])
    out.discard(value)
    out.discard("")
    return sorted(out)


class TrainFacts:
    """What the fault planter needs to know about the training rows."""

    def __init__(self, train, categorical, numeric):
        self.categorical = categorical
        self.numeric = numeric
        self.values = {c: train[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in numeric}
        self.min = {c: np.nanmin(v) for c, v in self.values.items()}
        self.max = {c: np.nanmax(v) for c, v in self.values.items()}
        self.std = {c: np.nanstd(v, ddof=1) for c, v in self.values.items()}
        self.labels = {c: train[c].astype(object).to_numpy() for c in categorical}
        self.categories = {c: {str(v) for v in train[c].dropna()} for c in categorical}
        self.never_missing = [c for c in list(categorical) + list(numeric) if not train[c].isna().any()]


def _present(cell):
    return cell is not None and not (isinstance(cell, float) and np.isnan(cell))


def _plant(kind, cells, facts, rng):
    """Plant one fault of ``kind`` in ``cells`` (a dict, changed in place).

    Returns the planted column (a tuple of two for swap), or None when the
    row has no cell this kind can go into.
    """
    num = [c for c in facts.numeric if _present(cells[c])]
    cat = [c for c in facts.categorical if _present(cells[c])]
    if kind == "unit":
        options = [c for c in num if cells[c] != 0]
        if not options:
            return None
        col = options[rng.randint(len(options))]
        cells[col] = cells[col] * 1000.0 if rng.rand() < 0.5 else cells[col] / 100.0
        return col
    if kind == "swap":
        pairs = [(a, b) for i, a in enumerate(num) for b in num[i + 1 :] if cells[a] != cells[b]]
        if not pairs:
            return None
        a, b = pairs[rng.randint(len(pairs))]
        cells[a], cells[b] = cells[b], cells[a]
        return (a, b)
    if kind == "typo":
        if not cat:
            return None
        col = cat[rng.randint(len(cat))]
        options = [s for s in misspellings(str(cells[col])) if s not in facts.categories[col]]
        if options:
            cells[col] = options[rng.randint(len(options))]
        else:  # never happened on the shipped tables
            new = str(cells[col]) + "x"
            while new in facts.categories[col]:
                new += "x"
            cells[col] = new
        return col
    if kind == "impossible":
        if not num:
            return None
        col = num[rng.randint(len(num))]
        x = cells[col]
        if facts.min[col] >= 0:
            cells[col] = -x if x > 0 else -1.0
        else:
            cells[col] = facts.max[col] + 10.0 * (facts.max[col] - facts.min[col])
        return col
    if kind == "missing":
        options = [c for c in facts.never_missing if _present(cells[c])]
        if not options:
            return None
        col = options[rng.randint(len(options))]
        cells[col] = np.nan
        return col
    if kind == "ctx_numeric":
        order = rng.permutation(len(num))
        for j in order:
            col = num[j]
            values = facts.values[col]
            donors = values[np.abs(values - cells[col]) >= facts.std[col]]  # NaN compares False
            if facts.std[col] > 0 and len(donors):
                cells[col] = float(donors[rng.randint(len(donors))])
                return col
        return None
    if kind == "ctx_category":
        order = rng.permutation(len(cat))
        for j in order:
            col = cat[j]
            labels = facts.labels[col]
            donors = [v for v in labels if _present(v) and str(v) != str(cells[col])]
            if donors:
                cells[col] = str(donors[rng.randint(len(donors))])
                return col
        return None
    raise ValueError(kind)


def plant_faults(train, test, categorical, numeric, rng, n_faulty=None):
    """Test rows with one fault in a random half of them (``n_faulty`` rows when given).

    Returns the faulty frame, the kind per row ('' for clean rows), the planted
    column(s) per row (a tuple, empty for clean rows) and the number of rows
    whose rotation kind could not be planted (another kind was used instead).
    """
    facts = TrainFacts(train, categorical, numeric)
    n = len(test)
    columns = {c: test[c].astype(object).to_numpy().copy() for c in categorical}
    columns.update({c: test[c].to_numpy(dtype=np.float64, na_value=np.nan).copy() for c in numeric})
    kind = np.array([""] * n, dtype=object)
    planted = [()] * n
    faulty = rng.permutation(n)[: n // 2 if n_faulty is None else n_faulty]
    fallbacks = 0
    for i, row in enumerate(faulty):
        cells = {c: columns[c][row] for c in columns}
        wanted = KINDS[i % len(KINDS)]
        tries = [wanted] + [k for k in KINDS if k != wanted]
        for k in tries:
            col = _plant(k, cells, facts, rng)
            if col is not None:
                break
        if col is None:
            raise RuntimeError(f"no fault fits test row {row}")
        fallbacks += k != wanted
        for c, v in cells.items():
            columns[c][row] = v
        kind[row] = k
        planted[row] = col if isinstance(col, tuple) else (col,)

    out = pd.DataFrame(index=pd.RangeIndex(n))
    for c in test.columns:
        if c in categorical:
            train_categories = list(train[c].cat.categories)
            new = sorted({str(v) for v in columns[c] if _present(v)} - set(train_categories))
            values = [str(v) if _present(v) else np.nan for v in columns[c]]
            out[c] = pd.Categorical(values, categories=train_categories + new)
        else:
            values = columns[c]
            whole = not np.isnan(values).any() and np.all(np.mod(values, 1) == 0)
            out[c] = values.astype(train[c].dtype) if whole and train[c].dtype.kind == "i" else values
    return out, kind, planted, fallbacks


# ------------------------------------------------------------------ methods
def first_named_column(reason):
    """The first column an explain() reason names, or None.

    The reason reads "log p(x)=-123.4 below the band's lower edge -20.1:
    fare=524 (12.3 nats below typical); age=...": the name is the text after
    the first ': ' up to the next '='. Column names containing '=' (or ': ')
    are not supported.
    """
    head, sep, rest = reason.partition(": ")
    if not sep or "=" not in rest:
        return None  # e.g. "jointly unlikely: no single column stands out"
    return rest.split("=", 1)[0]


def run_vaefilter(train, test, seed):
    det = VAEOutlierDetector(handle_missing="model", random_state=seed, device="cpu")
    det.fit(train)
    log_px = det.score_samples(test)
    threshold = np.percentile(det.validation_scores_, FALSE_REJECTION)
    explanation = det.explain(test)
    return -log_px, log_px < threshold, explanation


def run_rules(train, test):
    import pandera.pandas as pa
    from pandera.errors import SchemaErrors

    schema = pa.infer_schema(train)
    # infer_schema already adds isin(training categories) to category columns;
    # add it where it did not (older pandera versions)
    for name in train.columns:
        column = schema.columns[name]
        if isinstance(train[name].dtype, pd.CategoricalDtype) and not any(
            "isin" in str(check) for check in column.checks
        ):
            allowed = [str(v) for v in train[name].dropna().unique()]
            schema = schema.update_column(name, checks=list(column.checks) + [pa.Check.isin(allowed)])
    counts = np.zeros(len(test))
    column_level = 0
    try:
        schema.validate(test, lazy=True)
    except SchemaErrors as error:
        cases = error.failure_cases
        row_cases = cases[cases["index"].notna()]
        column_level = len(cases) - len(row_cases)
        per_row = row_cases.drop_duplicates(["index", "column", "check"]).groupby("index").size()
        counts[per_row.index.to_numpy(dtype=np.int64)] = per_row.to_numpy()
    return counts, counts > 0, column_level


def peer_encoder(categorical, numeric):
    numeric_steps = Pipeline(
        [
            (
                "impute",
                FeatureUnion(
                    [
                        ("median", SimpleImputer(strategy="median")),
                        ("missing", MissingIndicator(features="all")),
                    ]
                ),
            ),
            ("scale", StandardScaler()),
        ]
    )
    return ColumnTransformer(
        [
            ("numeric", numeric_steps, numeric),
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
        ]
    )


def as_peer_input(frame, categorical):
    frame = frame.copy()
    for c in categorical:
        frame[c] = frame[c].astype(object).where(frame[c].notna(), np.nan)
    return frame


def gmm_by_bic(X, seed):
    best, best_bic = None, np.inf
    for k in (1, 2, 4, 8):
        if k > len(X):
            break
        model = GaussianMixture(n_components=k, covariance_type="full", random_state=seed).fit(X)
        bic = model.bic(X)
        if bic < best_bic:
            best, best_bic = model, bic
    return best


def run_peers(train, test, categorical, numeric, seed, timings):
    """Scores (higher = more anomalous) and rejections at each peer's 1% threshold."""
    from pyod.models.auto_encoder import AutoEncoder
    from pyod.models.vae import VAE

    n_fit = int(round(PEER_FIT_SHARE * len(train)))
    encoder = peer_encoder(categorical, numeric)
    X_fit = encoder.fit_transform(as_peer_input(train.iloc[:n_fit], categorical))
    X_hold = encoder.transform(as_peer_input(train.iloc[n_fit:], categorical))
    X_test = encoder.transform(as_peer_input(test, categorical))

    builders = {
        "IsolationForest": lambda: IsolationForest(random_state=seed, n_jobs=1).fit(X_fit),
        "LOF": lambda: LocalOutlierFactor(novelty=True, n_jobs=1).fit(X_fit),
        "GMM": lambda: gmm_by_bic(X_fit, seed),
        "PyOD VAE": lambda: VAE(contamination=0.1, random_state=seed, device="cpu", verbose=0).fit(X_fit),
        "PyOD AE": lambda: AutoEncoder(contamination=0.1, random_state=seed, device="cpu", verbose=0).fit(X_fit),
    }
    out = {}
    for name, build in builders.items():
        start = time.perf_counter()
        model = build()
        if name.startswith("PyOD"):
            score = lambda X: model.decision_function(X)  # noqa: E731
        else:
            score = lambda X: -model.score_samples(X)  # noqa: E731
        threshold = np.percentile(score(X_hold), 100 - FALSE_REJECTION)
        test_score = score(X_test)
        out[name] = (test_score, test_score > threshold)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
    return out


# ---------------------------------------------------------------- one split
def run_split(table, seed, timings):
    frame, categorical, numeric = mixed_tables.load(table)
    rng = np.random.RandomState([seed, sorted(mixed_tables.TABLES).index(table)])
    order = rng.permutation(len(frame))
    n_train = int(round(TRAIN_SHARE * len(frame)))
    train = frame.iloc[order[:n_train]].reset_index(drop=True)
    for c in categorical:
        train[c] = train[c].cat.remove_unused_categories()
    test_clean = frame.iloc[order[n_train:]].reset_index(drop=True)
    test, kind, planted, fallbacks = plant_faults(train, test_clean, categorical, numeric, rng)

    results = {}
    start = time.perf_counter()
    score, reject, explanation = run_vaefilter(train, test, seed)
    timings["vaefilter"] = timings.get("vaefilter", 0.0) + time.perf_counter() - start
    results["vaefilter"] = (score, reject)

    start = time.perf_counter()
    counts, rule_reject, column_level = run_rules(train, test)
    timings["rules"] = timings.get("rules", 0.0) + time.perf_counter() - start
    results["rules"] = (counts, rule_reject)
    results.update(run_peers(train, test, categorical, numeric, seed, timings))

    records = []
    clean = kind == ""
    for method, (score, reject) in results.items():
        base = {"table": table, "seed": seed, "method": method}
        records.append({**base, "metric": "auc", "kind": "all", "value": roc_auc_score(~clean, score)})
        records.append({**base, "metric": "frr", "kind": "clean", "value": reject[clean].mean()})
        records.append({**base, "metric": "det", "kind": "all", "value": reject[~clean].mean()})
        for k in KINDS:
            rows = kind == k
            if rows.any():
                keep = clean | rows
                records.append({**base, "metric": "auc", "kind": k, "value": roc_auc_score(rows[keep], score[keep])})
                records.append({**base, "metric": "det", "kind": k, "value": reject[rows].mean()})

    names = list(explanation.columns[3:])
    deficits = explanation[names].to_numpy()
    vae_reject = results["vaefilter"][1]
    explained = []
    for row in np.flatnonzero(~clean):
        argmax = names[int(np.nanargmax(deficits[row]))]
        first = first_named_column(explanation["reason"].iloc[row]) if vae_reject[row] else None
        explained.append(
            {
                "table": table,
                "seed": seed,
                "kind": kind[row],
                "rejected": bool(vae_reject[row]),
                "first_ok": first in planted[row],
                "argmax_ok": argmax in planted[row],
            }
        )
    info = {
        "table": table,
        "seed": seed,
        "rows": len(frame),
        "train": len(train),
        "test": len(test),
        "faulty": int((~clean).sum()),
        "fallbacks": fallbacks,
        "rule_column_failures": column_level,
        "categorical": len(categorical),
        "numeric": len(numeric),
    }
    return records, explained, info


# ------------------------------------------------------------------ report
def markdown(frame, index_name="", fmt="{:.3f}"):
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join([index_name] + cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for idx, row in frame.iterrows():
        cells = []
        for v in row:
            if isinstance(v, (float, np.floating)):
                cells.append("" if np.isnan(v) else fmt.format(v))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(lines)


def report(records, explained, infos, tables, seeds, elapsed, timings):
    rec = pd.DataFrame(records)
    exp = pd.DataFrame(explained)
    inf = pd.DataFrame(infos)
    methods = list(METHODS)
    parts = [
        "# Mixed-type detection (bench_mixed.py)",
        "",
        f"Tables: {', '.join(tables)}; seeds: {', '.join(map(str, seeds))}. "
        "One planted fault in a random half of each 40% test split; seven kinds in rotation. "
        f"Run time {elapsed:.0f} s ({elapsed / 60:.1f} min) on {torch.get_num_threads()} torch threads. "
        f"vaefilter {vaefilter.__version__} imported from {Path(vaefilter.__file__).parent}.",
        "",
    ]
    shape = inf.groupby("table", sort=False).first()[["rows", "train", "test", "faulty", "numeric", "categorical"]]
    parts += ["Tables (rows after cleaning; train/test per split):", "", markdown(shape, "table", "{}"), ""]

    auc = rec[rec.metric == "auc"]
    table_auc = (
        auc[auc.kind == "all"].groupby(["table", "method"]).value.mean().unstack()[methods].reindex(list(tables))
    )
    table_auc.loc["mean"] = table_auc.mean()
    parts += ["## (a) ROC-AUC per table, all faults (mean over seeds)", "", markdown(table_auc, "table"), ""]

    # mean over tables and seeds of each split's AUC
    kind_auc = auc.groupby(["kind", "method"]).value.mean().unstack()[methods]
    by_kind = kind_auc.reindex(list(KINDS))
    by_kind.loc["mean of 7 kinds"] = by_kind.loc[list(KINDS)].mean()
    by_kind.loc["mean contextual (2)"] = by_kind.loc[list(CONTEXTUAL)].mean()
    by_kind.loc["all faults pooled"] = kind_auc.loc["all"]
    parts += [
        "## (b) ROC-AUC per fault kind (mean over tables and seeds)",
        "",
        "A kind's AUC: clean test rows vs test rows with that fault. 'all faults pooled': clean vs all faulty rows.",
        "",
        markdown(by_kind, "fault kind"),
        "",
    ]

    det = rec[rec.metric.isin(["det", "frr"])]
    at_one = det.groupby(["kind", "method"]).value.mean().unstack()[methods]
    at_one = at_one.reindex(list(KINDS) + ["all", "clean"])
    at_one = at_one.rename(index={"all": "all planted rows", "clean": "false rejection (clean rows)"})
    parts += [
        "## (c) Detection at ~1% false rejection (mean over tables and seeds)",
        "",
        "Share of rows rejected. vaefilter: below the 1st percentile of its validation_scores_; "
        "peers: above their 99th percentile on the held-out 20% of the train split; rules: any failed check.",
        "",
        markdown(at_one, "fault kind"),
        "",
    ]
    frr = det[det.metric == "frr"].groupby(["table", "method"]).value.mean().unstack()[methods].reindex(list(tables))
    parts += ["False rejection of clean test rows per table (mean over seeds):", "", markdown(frr, "table"), ""]

    def explain_rows(group):
        rejected = group[group.rejected]
        return pd.Series(
            {
                "faulty rows": len(group),
                "rejected at 1%": len(rejected),
                "first named = planted": rejected.first_ok.mean() if len(rejected) else np.nan,
                "argmax deficit = planted (all faulty)": group.argmax_ok.mean(),
            }
        )

    by_kind_exp = pd.DataFrame({k: explain_rows(exp[exp.kind == k]) for k in KINDS}).T
    by_kind_exp.loc["all"] = explain_rows(exp)
    by_table_exp = pd.DataFrame({t: explain_rows(exp[exp.table == t]) for t in tables}).T

    def fmt_explain(frame):
        frame = frame.copy()
        for c in ("faulty rows", "rejected at 1%"):
            frame[c] = frame[c].astype(int).astype(str)
        return frame

    parts += [
        "## (d) vaefilter explain(): is the planted column named?",
        "",
        "'first named = planted': among faulty rows rejected at the 1% threshold, the first column in `reason` "
        "is the planted one (either column for swap). 'argmax deficit': over all faulty rows, the column with "
        "the largest deficit is the planted one. Rows pooled over tables and seeds.",
        "",
        markdown(fmt_explain(by_kind_exp), "fault kind"),
        "",
        markdown(fmt_explain(by_table_exp), "table"),
        "",
    ]
    notes = []
    if inf.fallbacks.sum():
        notes.append(f"{int(inf.fallbacks.sum())} faulty rows got another kind than their rotation slot.")
    if inf.rule_column_failures.sum():
        notes.append(
            f"pandera reported {int(inf.rule_column_failures.sum())} column-level failure cases (no row index); "
            "not counted per row."
        )
    timing = ", ".join(f"{m} {timings.get(m, 0):.0f} s" for m in methods)
    notes.append(f"Fit + score time per method, all splits: {timing}.")
    parts += ["Notes: " + " ".join(notes), ""]
    return "\n".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed and the three small tables")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3, 1 with --quick)")
    parser.add_argument("--tables", nargs="+", choices=sorted(mixed_tables.TABLES), default=None)
    parser.add_argument("--threads", type=int, choices=(1, 2), default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=None, help="markdown file (default benchmarks/out/bench_mixed.md)")
    args = parser.parse_args(argv)

    # one thread: the networks are small, and two threads on the 2-core
    # machine made PyOD's VAE 7x slower (and very load dependent)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    n_seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    seeds = list(range(n_seeds))
    tables = args.tables or (list(mixed_tables.QUICK_TABLES) if args.quick else list(mixed_tables.TABLES))
    out = args.out or OUT_DIR / ("bench_mixed_quick.md" if args.quick else "bench_mixed.md")

    start = time.perf_counter()
    records, explained, infos, timings = [], [], [], {}
    for seed in seeds:
        for table in tables:
            split_start = time.perf_counter()
            r, e, i = run_split(table, seed, timings)
            records += r
            explained += e
            infos.append(i)
            print(f"[{time.perf_counter() - start:6.0f} s] {table} seed {seed}: {time.perf_counter() - split_start:.0f} s",
                  file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - start
    text = report(records, explained, infos, tables, seeds, elapsed, timings)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"(written to {out})", file=sys.stderr)


if __name__ == "__main__":
    main()
