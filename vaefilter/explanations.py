"""Why a row was rejected: the columns that make it unlikely, in words."""

from __future__ import annotations

import numpy as np

# columns less than this many nats below their typical contribution are not named
MIN_DEFICIT_NATS = 1.0
MAX_COLUMNS_NAMED = 3


def _format_value(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value) if isinstance(value, str) else str(value)


def _low_likelihood_reason(deficits, values, names, notes):
    # values training never saw come first, then the largest deficits
    flagged = np.array([bool(note) for note in notes])
    order = np.lexsort((-deficits, ~flagged))[:MAX_COLUMNS_NAMED]
    parts = []
    for j in order:
        if deficits[j] < MIN_DEFICIT_NATS and not notes[j]:
            break
        note = f", {notes[j]}" if notes[j] else ""
        parts.append(f"{names[j]}={_format_value(values[j])} ({deficits[j]:.1f} nats below typical{note})")
    if not parts:
        return "jointly unlikely: no single column stands out"
    return "; ".join(parts)


def reasons_for_rows(log_px, thresholds, deficits, values, names, notes):
    """One reason string per row ('' for rows inside the band).

    Parameters
    ----------
    log_px : ndarray of shape (n_samples,)
        Scores, nats.
    thresholds : tuple of (float or None, float or None)
        The band.
    deficits : ndarray of shape (n_samples, n_features)
        Typical minus the row's expected log p(x_j | z) per column, nats: how
        much less likely the column is than usual.
    values : sequence of sequences
        The rows' values as the user gave them, for display.
    names : list of str
        Column names.
    notes : mapping of int to list of str
        For each row below the band (by position), per column, a note on a
        value outside what training saw (missing, unseen category), or ''.
        Other rows need none.
    """
    lower, upper = thresholds
    reasons = []
    for i, score in enumerate(log_px):
        if lower is not None and score < lower:
            head = f"log p(x)={score:.1f} below the band's lower edge {lower:.1f}: "
            reasons.append(head + _low_likelihood_reason(deficits[i], values[i], names, notes[i]))
        elif upper is not None and score > upper:
            reasons.append(
                f"log p(x)={score:.1f} above the band's upper edge {upper:.1f}: unusually typical row "
                "(likelihood models score some anomalies, e.g. constant or blank rows, too high)"
            )
        else:
            reasons.append("")
    return reasons
