"""Why a row was rejected, as structured records built once; the reason text is rendered from them.

A rejected row's :class:`Explanation` holds its log p(x), the side and edge of
the band it falls outside, and for a row below the band up to
:data:`MAX_COLUMNS_NAMED` :class:`ColumnProblem` records (column, kind of
problem, deficit in nats, the value as given, a note in words). The ``reason``
column of :meth:`VAEOutlierDetector.explain` and of the CLI's outputs is
:meth:`Explanation.render` of these records; the HTML report groups the
records themselves. :func:`parse_reason` reads a rendered reason back (for a
reason column read from a file), and is tested against :meth:`Explanation.render`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .columns import CATEGORICAL

__all__ = [
    "ABOVE_BAND",
    "DEFICIT",
    "JOINTLY_UNLIKELY",
    "MISSING",
    "OUT_OF_SUPPORT",
    "UNSEEN_CATEGORY",
    "ColumnProblem",
    "Explanation",
    "explain_rows",
    "parse_reason",
    "render_reasons",
]

# columns less than this many nats below their typical contribution are not named
MIN_DEFICIT_NATS = 1.0
MAX_COLUMNS_NAMED = 3

#: kinds of problem of a named column
OUT_OF_SUPPORT = "out_of_support"  # a value the column's kind cannot take (a negative count)
UNSEEN_CATEGORY = "unseen_category"  # a category training never saw
MISSING = "missing"  # a missing cell in a column never missing in training
DEFICIT = "deficit"  # a possible value, but many nats less likely than typical
#: kinds of problem of a row that names no column
ABOVE_BAND = "above_band"  # unusually typical: log p(x) above the band's upper edge
JOINTLY_UNLIKELY = "jointly_unlikely"  # below the band, but no single column stands out

BELOW, ABOVE = "below", "above"

_ABOVE_DETAIL = ("unusually typical row (likelihood models score some anomalies, e.g. constant or blank rows, "
                 "too high)")
_JOINT_DETAIL = "jointly unlikely: no single column stands out"


#: the longest cell text a reason quotes; longer ones are cut and their length given
MAX_QUOTED_CHARS = 80


def quote_cell(text):
    """``repr`` of a cell text, cut to :data:`MAX_QUOTED_CHARS` characters."""
    text = str(text)
    if len(text) <= MAX_QUOTED_CHARS:
        return repr(text)
    return f"{text[:MAX_QUOTED_CHARS]!r}... ({len(text)} characters)"


def format_nats(value):
    """A score or deficit in nats: one decimal, or 4 significant digits past a million.

    A value 1e20 standard deviations out costs ~5e28 nats, which ``.1f``
    wrote as 29 digits.
    """
    return f"{value:.1f}" if abs(value) < 1e6 else f"{value:.4g}"


def format_value(value):
    """A cell's value as a reason quotes it."""
    if isinstance(value, float):
        # six digits of an epoch time (1.70002e+09) do not say which second; ten do
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.10g}"
    # a 100,000-character category would otherwise be the whole reason (and 7 copies in a report)
    return quote_cell(value) if isinstance(value, str) else str(value)


@dataclass(frozen=True)
class ColumnProblem:
    """One column named in a reason.

    Attributes
    ----------
    column : str
    problem : str
        :data:`OUT_OF_SUPPORT`, :data:`UNSEEN_CATEGORY`, :data:`MISSING` or :data:`DEFICIT`.
    deficit : float
        Nats the column's value is less likely than typical, given the rest of the row.
    value : object
        The value as the user gave it.
    note : str
        The problem in words ('' for a plain deficit).
    """

    column: str
    problem: str
    deficit: float
    value: object
    note: str = ""

    def render(self):
        note = f", {self.note}" if self.note else ""
        return f"{self.column}={format_value(self.value)} ({format_nats(self.deficit)} nats below typical{note})"


@dataclass(frozen=True)
class Explanation:
    """Why one row lies outside the band.

    Attributes
    ----------
    log_px : float
        The row's score, nats.
    side : str
        ``'below'`` or ``'above'`` the band.
    edge : float
        The band's edge on that side.
    columns : tuple of ColumnProblem
        Below the band, the columns that make the row unlikely, the most
        telling first (values training never saw, then the largest deficits).
    """

    log_px: float
    side: str
    edge: float
    columns: tuple = ()

    @property
    def problem(self):
        """The row's kind of problem: its first column's, :data:`ABOVE_BAND` or :data:`JOINTLY_UNLIKELY`."""
        if self.side == ABOVE:
            return ABOVE_BAND
        return self.columns[0].problem if self.columns else JOINTLY_UNLIKELY

    def render(self):
        """The reason text, as ``explain`` and the CLI write it."""
        if self.side == ABOVE:
            return (f"log p(x)={format_nats(self.log_px)} above the band's upper edge {format_nats(self.edge)}: "
                    f"{_ABOVE_DETAIL}")
        detail = "; ".join(c.render() for c in self.columns) if self.columns else _JOINT_DETAIL
        return f"log p(x)={format_nats(self.log_px)} below the band's lower edge {format_nats(self.edge)}: {detail}"


def cell_problem(schema, j, value):
    """(kind of problem, note) of model-matrix cell ``value`` of column ``j``: :data:`DEFICIT` and ''
    when the value lies inside what training saw."""
    note = schema.describe_cell(j, value)
    if not note:
        return DEFICIT, ""
    if np.isnan(value):
        return MISSING, note
    if schema.columns[j].kind == CATEGORICAL:
        return UNSEEN_CATEGORY, note
    return OUT_OF_SUPPORT, note


def _named_order(deficits, flagged):
    """Per row, the at most MAX_COLUMNS_NAMED columns to name, in order, and how many of them are named.

    Values training never saw (``flagged``) come first, then the largest
    deficits (ties by column order); naming stops at the first column with a
    deficit below MIN_DEFICIT_NATS that is not flagged.
    """
    # two stable sorts make a lexicographic one: by -deficit, then flagged first
    by_deficit = np.argsort(-deficits, axis=1, kind="stable")
    order = np.take_along_axis(by_deficit, np.argsort(~np.take_along_axis(flagged, by_deficit, 1), axis=1,
                                                      kind="stable"), 1)[:, :MAX_COLUMNS_NAMED]
    # a NaN deficit is not "below" the floor: it is named, as before
    keep = ~(np.take_along_axis(deficits, order, 1) < MIN_DEFICIT_NATS) | np.take_along_axis(flagged, order, 1)
    return order, np.cumprod(keep, axis=1).sum(axis=1)


def explain_rows(log_px, thresholds, deficits, values, schema, X_model):
    """One :class:`Explanation` per row outside the band, None for a row inside it.

    Parameters
    ----------
    log_px : ndarray of shape (n_samples,)
        Scores, nats.
    thresholds : tuple of (float or None, float or None)
        The band.
    deficits : ndarray of shape (n_samples, n_features)
        Typical minus the row's log p(x_j | ...) per column, nats: how much
        less likely the column is than usual.
    values : sequence of sequences
        The rows' values as the user gave them, for display.
    schema : TableSchema
        The model's columns: their names and what training saw.
    X_model : ndarray of shape (n_samples, n_features)
        The rows as the model reads them, to tell values training never saw.
    """
    lower, upper = thresholds
    names = [str(n) for n in schema.names]
    log_px = np.asarray(log_px, dtype=np.float64)
    records = [None] * len(log_px)
    if upper is not None:
        above = log_px > upper
        if lower is not None:
            above &= ~(log_px < lower)  # below the band wins, as it always has
        for i in np.flatnonzero(above):
            records[i] = Explanation(float(log_px[i]), ABOVE, float(upper))
    if lower is None:
        return records
    below = np.flatnonzero(log_px < lower)
    if not len(below):
        return records
    # The cells are judged column by column and only the rare cells outside
    # what training saw are described in words: describing every cell of the
    # rows below the band one at a time took 8% of a default filter's time
    # (titanic, 30,000 rows, half of them rejected).
    X_below = np.asarray(X_model, dtype=np.float64)[below]
    flagged = schema.outside_support(X_below)
    problems = {(int(r), int(j)): cell_problem(schema, int(j), X_below[r, j]) for r, j in np.argwhere(flagged)}
    deficits_below = np.asarray(deficits, dtype=np.float64)[below]
    order, n_named = _named_order(deficits_below, flagged)
    # plain Python numbers from here: numpy scalar indexing in this loop over rows cost more than the loop
    named_deficits = np.take_along_axis(deficits_below, order, 1).tolist()
    order, n_named, scores = order.tolist(), n_named.tolist(), log_px[below].tolist()
    plain = (DEFICIT, "")
    edge = float(lower)
    for r, i in enumerate(below.tolist()):
        row_values = values[i]
        named = []
        for k, j in enumerate(order[r][: n_named[r]]):
            kind, note = problems.get((r, j), plain)
            named.append(ColumnProblem(names[j], kind, named_deficits[r][k], row_values[j], note))
        records[i] = Explanation(scores[r], BELOW, edge, tuple(named))
    return records


def render_reasons(records):
    """The reason text of each record ('' for None: a row inside the band)."""
    return ["" if record is None else record.render() for record in records]


# ------------------------------------------------------------ reading back
_HEAD = re.compile(r"^log p\(x\)=(\S+) (below|above) the band's (?:lower|upper) edge (\S+): (.*)$", re.DOTALL)
_PART = re.compile(r"^(.*) \((-?[0-9.]+(?:e[+-]?[0-9]+)?|nan|inf|-inf) nats below typical(?:, (.*))?\)$", re.DOTALL)


def _problem_of_note(note):
    if not note:
        return DEFICIT
    if note.startswith("missing"):
        return MISSING
    if note.startswith("a category never seen"):
        return UNSEEN_CATEGORY
    return OUT_OF_SUPPORT


def parse_reason(reason, names):
    """The :class:`Explanation` of a rendered reason (say, read from a rejected-rows file), or None.

    The inverse of :meth:`Explanation.render` up to the rounding of numbers
    and the values' types (a value comes back as its text). ``names`` are the
    model's column names: a name may itself contain '=' and is matched whole.
    None for '' and for text in no format this module writes.
    """
    match = _HEAD.match(reason)
    if not match:
        return None
    log_px, side, edge, detail = match.groups()
    if side == ABOVE:
        return Explanation(float(log_px), ABOVE, float(edge))
    columns = []
    if not detail.startswith("jointly unlikely"):
        for part in detail.split("; "):
            candidates = [name for name in names if part.startswith(f"{name}=")]
            if not candidates and "=" not in part:
                continue
            column = max(candidates, key=len) if candidates else part.split("=", 1)[0]
            rest = _PART.match(part[len(column) + 1 :])
            value, deficit, note = (rest.group(1), float(rest.group(2)), rest.group(3) or "") if rest else (
                part[len(column) + 1 :], float("nan"), "")
            columns.append(ColumnProblem(column, _problem_of_note(note), deficit, value, note))
    return Explanation(float(log_px), BELOW, float(edge), tuple(columns))
