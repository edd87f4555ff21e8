"""Typing of CSV cell text: which texts are missing, numbers, booleans or categories.

Used by the CLI and :mod:`vaefilter.dask`; the library's DataFrame path does not go through it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .columns import BINARY, CATEGORICAL, NUMERIC  # noqa: F401  (CATEGORICAL re-exported)

#: cell texts read as missing
MISSING_TOKENS = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"})
_BOOL_TOKENS = {"true": True, "false": False, "True": True, "False": False, "TRUE": True, "FALSE": False}


def _missing_mask(text):
    return text.isin(MISSING_TOKENS).to_numpy()


def _as_number(text, missing):
    values = pd.to_numeric(text.where(~missing, None), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return values, ~missing & ~np.isfinite(values)


def _as_bool(text, missing):
    mapped = text.map(_BOOL_TOKENS)
    bad = ~missing & mapped.isna().to_numpy()
    return pd.array(mapped.where(~missing, None), dtype="boolean"), bad


def infer_text_table(frame, categorical=()):
    """Typed table from CSV text: numeric, boolean (true/false) or categorical per column.

    Parameters
    ----------
    frame : DataFrame of str
        Exact cell texts (see :class:`vaefilter.csvio.CsvReader`).
    categorical : collection of str
        Columns to treat as categorical whatever their text.
    """
    typed = {}
    for name in frame.columns:
        text = frame[name].astype(str)
        missing = _missing_mask(text)
        numbers, not_numbers = _as_number(text, missing)
        booleans, not_booleans = _as_bool(text, missing)
        if name not in categorical and not not_numbers.any():
            typed[name] = numbers
        elif name not in categorical and not not_booleans.any():
            typed[name] = booleans
        else:
            typed[name] = pd.Categorical(text.where(~missing, None))
    return pd.DataFrame(typed, index=frame.index)


def parse_text_table(frame, schema, source="input"):
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
        missing = _missing_mask(text)
        if spec.kind == NUMERIC:
            values, bad = _as_number(text, missing)
            what = "is not a finite number"
        elif spec.kind == BINARY:
            values, bad = _as_bool(text, missing)
            what = "is not true or false"
        else:
            values, bad = pd.Categorical(text.where(~missing, None)), np.zeros(len(text), bool)
        for position in np.flatnonzero(bad):
            label = frame.index[position]
            problems.setdefault(label, f"column {spec.name!r}: {text.iloc[position]!r} {what}")
        if spec.kind == NUMERIC:
            values = np.where(bad, np.nan, values)
        typed[spec.name] = values
    return pd.DataFrame(typed, index=frame.index), problems
