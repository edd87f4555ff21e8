"""The seven fault kinds of the mixed-type benchmarks, planted into copies of real rows.

Shared by bench_mixed.py, bench_drift.py and bench_robust.py (the tables are in
mixed_tables.py): a unit error (x1000 or /100), two numeric columns swapped, a
category typo, an impossible value, a missing cell in a never-missing column,
and two contextual kinds per-column rules cannot see (a numeric cell from
another row, another valid category).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KINDS = ("unit", "swap", "typo", "impossible", "missing", "ctx_numeric", "ctx_category")
CONTEXTUAL = ("ctx_numeric", "ctx_category")


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
