"""Typing of CSV cell text: which texts are missing, numbers, booleans or categories.

Used by the CLI and :mod:`vaefilter.dask`; the library's DataFrame path does not go through it.
A value means the same from CSV text as from a DataFrame:

* a boolean column takes ``true``/``false`` (any case) and ``0``/``1`` (``0.0``, ``1.0``);
* a categorical column whose training categories are all numbers matches a cell by its
  numeric value (the text ``1`` is the category ``1.0``); other categories match by text;
* missing are the texts in :data:`MISSING_TOKENS` and any extra ``na_values``; in a numeric
  column also those texts with spaces around them (a number may have spaces around it, so
  ``' '`` and ``' NA'`` are missing there, as ``''`` and ``'NA'`` are).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..columns import BINARY, CATEGORICAL, NUMERIC  # noqa: F401  (CATEGORICAL re-exported)
from ..explanations import quote_cell

#: cell texts read as missing
MISSING_TOKENS = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"})
_BOOL_TOKENS = {"true": True, "false": False}

#: a column inferred as numeric but for at most this share of its present cells is
#: reported by :func:`odd_cells` (a '?' or 'n/a' in numbers, say)
ODD_CELL_SHARE = 0.05


def _missing_mask(text, na_values=()):
    tokens = MISSING_TOKENS.union(na_values) if na_values else MISSING_TOKENS
    return text.isin(tokens).to_numpy()


def _numeric_missing(text, missing, na_values=()):
    """``missing`` and, as numbers may be padded (``' 3'`` is 3), the missing texts padded with spaces."""
    padded = ~missing & (text.str.len() > 0).to_numpy()
    if not padded.any():
        return missing
    return missing | (padded & _missing_mask(text.str.strip(), na_values))


def _as_number(text, missing):
    values = pd.to_numeric(text.where(~missing, None), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    # + 0.0 turns -0.0 into 0.0: pandas reads '-0' as 0 in a chunk of integers and as -0.0 beside a
    # float, and a row's draws are keyed by its bits, so its score would depend on its neighbours
    return values + 0.0, ~missing & ~np.isfinite(values)


def _as_bool(text, missing):
    """true/false in any case, or a number equal to 0 or 1."""
    mapped = text.str.lower().map(_BOOL_TOKENS)
    numbers = pd.to_numeric(text.where(mapped.isna() & ~missing, None), errors="coerce")
    mapped = mapped.where(mapped.notna(), numbers.map({0.0: False, 1.0: True}))
    bad = ~missing & mapped.isna().to_numpy()
    return pd.array(mapped.where(~missing & ~bad, None), dtype="boolean"), bad


def _as_category(text, missing, categories):
    """Cell texts as training categories: by numeric value when every category is a number."""
    values = text.where(~missing, None)
    numeric = pd.to_numeric(pd.Series(categories, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    if len(categories) and np.isfinite(numeric).all():
        by_value = {float(v): c for v, c in zip(numeric, categories)}
        if len(by_value) == len(categories):  # no two categories with one value ('1' and '1.0')
            known = values.isin(categories).to_numpy()
            numbers, _ = _as_number(text, missing | known)
            matched = pd.Series(numbers, index=text.index).map(by_value)
            values = values.where(known | matched.isna().to_numpy(), matched)
    return pd.Categorical(values)


def infer_text_table(frame, categorical=(), na_values=()):
    """Typed table from CSV text: numeric, boolean (true/false) or categorical per column.

    Parameters
    ----------
    frame : DataFrame of str
        Exact cell texts (see :class:`vaefilter.io.csvio.CsvReader`).
    categorical : collection of str
        Columns to treat as categorical whatever their text.
    na_values : collection of str
        Cell texts read as missing besides :data:`MISSING_TOKENS`.
    """
    typed = {}
    for name in frame.columns:
        text = frame[name].astype(str)
        missing = _missing_mask(text, na_values)
        numbers, not_numbers = _as_number(text, _numeric_missing(text, missing, na_values))
        if name not in categorical and not not_numbers.any():
            typed[name] = numbers
            continue
        flags = text.str.lower()
        if name not in categorical and (flags.isin(_BOOL_TOKENS) | missing).all():
            typed[name], _ = _as_bool(text, missing)
        else:
            typed[name] = pd.Categorical(text.where(~missing, None))
    return pd.DataFrame(typed, index=frame.index)


def odd_cells(frame, categorical=(), na_values=()):
    """Columns that are numbers but for a few cells: {column: positions of the odd cells}.

    Such a column would become categorical, and every number outside the
    training values would then count as a category never seen; the CLI's
    ``fit`` refuses it unless the odd texts are declared missing or the
    column categorical. A column is listed when its odd cells are at most
    :data:`ODD_CELL_SHARE` of its present cells and at least one cell is a number.
    """
    found = {}
    for name in frame.columns:
        if name in categorical:
            continue
        text = frame[name].astype(str)
        missing = _numeric_missing(text, _missing_mask(text, na_values), na_values)
        _, not_numbers = _as_number(text, missing)
        n_present = int((~missing).sum())
        n_odd = int(not_numbers.sum())
        if 0 < n_odd <= ODD_CELL_SHARE * n_present and n_odd < n_present:
            found[name] = np.flatnonzero(not_numbers)
    return found


def parse_text_table(frame, schema, source="input", na_values=()):
    """Typed table for a fitted schema, and a reason for every row that does not parse.

    Returns
    -------
    typed : DataFrame
        The schema's columns, typed; rows with a reason hold placeholder values.
    problems : dict of {index label: str}
        e.g. ``"column 'age': 'abc' is not a number"``.
    """
    missing_columns = [c.name for c in schema.columns if c.name not in frame.columns]
    if missing_columns:
        raise ValueError(f"{source}: the header lacks column(s) the model needs: {missing_columns}")
    typed, problems = {}, {}
    for spec in schema.columns:
        text = frame[spec.name].astype(str)
        missing = _missing_mask(text, na_values)
        if spec.kind == NUMERIC:
            values, bad = _as_number(text, _numeric_missing(text, missing, na_values))
            what = "is not a finite number"
        elif spec.kind == BINARY:
            values, bad = _as_bool(text, missing)
            what = "is not true or false (nor 1 or 0)"
        else:
            values, bad = _as_category(text, missing, spec.categories), np.zeros(len(text), bool)
        for position in np.flatnonzero(bad):
            label = frame.index[position]
            problems.setdefault(label, f"column {spec.name!r}: {quote_cell(text.iloc[position])} {what}")
        if spec.kind == NUMERIC:
            values = np.where(bad, np.nan, values)
        typed[spec.name] = values
    return pd.DataFrame(typed, index=frame.index), problems
