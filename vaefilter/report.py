"""A one-file HTML report of a fitted detector and, optionally, a checked batch.

The report is self-contained: inline CSS, pictures embedded as base64 PNG data
URIs, no scripts and no links to the network, so it can be mailed or archived
as it is. Every value that comes from the user's data (column names,
categories, cells, reasons) is HTML-escaped.

Needs the optional ``plot`` extra (matplotlib) for its pictures.
"""

from __future__ import annotations

import base64
import errno
import html
import io
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from . import plotting
from .band import describe_band
from .estimator import band_percentiles, chosen_epoch_count, describe_epochs, search_threshold, training_loss_name
from .explanations import ABOVE_BAND, JOINTLY_UNLIKELY, Explanation, parse_reason

__all__ = ["build_report", "reason_groups", "reason_key", "write_report"]

# pictures at this resolution keep the whole report at a few hundred kB
REPORT_DPI = 80
MAX_TABLE_COLUMNS = 12
N_EXAMPLE_ROWS = 5
N_REASON_GROUPS = 10
# batch rows whose columns the drift section compares (as the filter's sample)
N_DRIFT_COLUMN_ROWS = 2000

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1100px; margin: 24px auto; padding: 0 16px; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #2ca02c; padding-bottom: 4px; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 2px; }
h3 { font-size: 1.05em; margin: 1em 0 0.4em; }
p.note { color: #555; font-size: 0.9em; }
.summary { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; background: #fafafa; min-width: 140px; }
.card .value { font-size: 1.35em; font-weight: 600; }
.card .label { font-size: 0.8em; color: #666; }
.card.bad .value { color: #c62828; }
.card.good .value { color: #2e7d32; }
table.dataframe { border-collapse: collapse; font-size: 0.85em; margin: 6px 0 12px; }
table.dataframe th, table.dataframe td { border: 1px solid #ddd; padding: 3px 8px; text-align: right;
       vertical-align: top; }
table.dataframe thead th { background: #f0f0f0; }
table.dataframe tbody tr:nth-child(even) { background: #fafafa; }
table.dataframe td.text, table.dataframe td:last-child { text-align: left; }
.wide { overflow-x: auto; }
.side { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
code { background: #f4f4f4; padding: 0 3px; border-radius: 3px; }
"""


# ------------------------------------------------------------------ helpers
def _figure_to_data_uri(figure, dpi=REPORT_DPI):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(figure, alt):
    return f'<img src="{_figure_to_data_uri(figure)}" alt="{html.escape(alt)}">'


def _esc(value):
    return html.escape(str(value), quote=True)


def _fmt(value, digits=4):
    if value is None:
        return "none"
    return f"{value:.{digits}g}" if isinstance(value, (float, np.floating)) else str(value)


def _table(frame, index=True):
    """DataFrame -> escaped HTML table (DataFrame.to_html escapes by default)."""
    return '<div class="wide">' + frame.to_html(
        escape=True,
        index=index,
        na_rep="NaN",
        float_format=lambda v: f"{v:.5g}",
        border=0,
    ) + "</div>"


def _card(value, label, kind=""):
    return (
        f'<div class="card {kind}"><div class="value">{_esc(value)}</div>'
        f'<div class="label">{_esc(label)}</div></div>'
    )


def _as_frame(detector, X):
    """A batch as a DataFrame with the training column names."""
    if isinstance(X, pd.DataFrame):
        return X
    return pd.DataFrame(np.asarray(X), columns=list(detector.schema_.names))


def _shown_columns(names, preferred=()):
    """At most MAX_TABLE_COLUMNS names: ``preferred`` first, then in order."""
    shown = [name for name in dict.fromkeys(preferred) if name in names]
    for name in names:
        if len(shown) >= MAX_TABLE_COLUMNS:
            break
        if name not in shown:
            shown.append(name)
    shown = shown[:MAX_TABLE_COLUMNS]
    return [name for name in names if name in shown]


# ------------------------------------------------------------------ reasons
def _record(reason, names):
    """An Explanation (or None) of a record or of a reason's text."""
    if reason is None or isinstance(reason, Explanation):
        return reason
    return parse_reason(str(reason), names)


def reason_key(reason, names):
    """The group of one ``explain`` reason: its first named column, or its kind.

    Parameters
    ----------
    reason : Explanation or str
        A record of ``detector.explain(X, return_records=True)``, or a reason
        text from ``detector.explain(X)['reason']`` (read back with
        :func:`vaefilter.explanations.parse_reason`).
    names : list of str
        The training column names (they may themselves contain '=').

    Returns
    -------
    key : str
        ``'<column> (below the band)'``, ``'unusually typical (above the band)'``,
        ``'jointly unlikely (below the band)'``, or the reason itself when its
        format is not recognised.
    """
    record = _record(reason, names)
    if record is None:
        return str(reason or "").strip() or "(no reason)"
    if record.problem == ABOVE_BAND:
        return "unusually typical (above the band)"
    if record.problem == JOINTLY_UNLIKELY:
        return "jointly unlikely (below the band)"
    return f"{record.columns[0].column} (below the band)"


def reason_groups(explanation, names, records=None):
    """Rejected rows grouped by the first column their reason names.

    Parameters
    ----------
    explanation : DataFrame
        The output of ``detector.explain``.
    names : list of str
        The training column names.
    records : list of (Explanation or None), optional
        The records of ``detector.explain(X, return_records=True)``, one per
        row of ``explanation``; without them the reason texts are read back.

    Returns
    -------
    groups : DataFrame
        One row per group, most frequent first: ``rows``, ``share of
        rejected`` and an ``example`` reason.
    named_anywhere : Series
        For each column, how many rejected rows name it anywhere in their reason.
    """
    rejected_rows = np.flatnonzero(~explanation["is_valid"].to_numpy(dtype=bool))
    texts = explanation["reason"].astype(str).to_numpy()[rejected_rows]
    if records is None:
        rejected = [_record(text, names) for text in texts]
    else:
        rejected = [records[k] for k in rejected_rows]
    keys = [reason_key(record if record is not None else text, names) for record, text in zip(rejected, texts)]
    counts = Counter(keys)
    examples = {}
    for key, text in zip(keys, texts):
        examples.setdefault(key, text)
    groups = pd.DataFrame(
        [
            {"cause (first column named)": key, "rows": count,
             "share of rejected": f"{count / max(len(keys), 1):.1%}",
             "example": examples[key]}
            for key, count in counts.most_common()
        ],
        columns=["cause (first column named)", "rows", "share of rejected", "example"],
    )
    anywhere = Counter()
    for record in rejected:
        if record is not None:
            anywhere.update({c.column for c in record.columns})
    named_anywhere = pd.Series(dict(anywhere.most_common()), dtype=int, name="rejected rows naming it")
    return groups, named_anywhere


# ---------------------------------------------------------------- sections
MAX_COLUMN_ROWS = 20


def _columns_table(specs):
    """One row per column; runs of alike columns share a row when there are many."""

    def describe(spec):
        categories = ", ".join(spec.categories[:12]) + (" ..." if len(spec.categories) > 12 else "")
        return (spec.description, spec.dtype, "yes" if spec.has_missing else "no", categories)

    runs = []
    for spec in specs:
        if len(specs) > MAX_COLUMN_ROWS and runs and runs[-1][1] == describe(spec):
            runs[-1][0].append(spec.name)
        else:
            runs.append(([spec.name], describe(spec)))
    rows = []
    for names, (kind, dtype, missing, categories) in runs:
        label = names[0] if len(names) == 1 else f"{names[0]} ... {names[-1]} ({len(names)} columns)"
        rows.append({"column": label, "kind": kind, "dtype": dtype, "missing modelled": missing,
                     "categories": categories})
    return pd.DataFrame(rows, columns=["column", "kind", "dtype", "missing modelled", "categories"])


def _model_section(detector):
    lower, upper = detector.thresholds_
    percentiles = band_percentiles(detector)  # the band's own, not a later set_params
    band_text = f"[{_fmt(lower, 6)}, {_fmt(upper, 6)}]"
    train = list(detector.loss_curve_)
    val = list(detector.validation_loss_curve_)
    best = int(detector.best_epoch_)
    loss = training_loss_name(detector)
    cards = [
        _card(band_text, f"valid band of log p(x), nats (percentiles {percentiles[0]}, {percentiles[1]})"),
        _card(detector.n_iter_, "epochs run"),
        _card(best, "best epoch (weights kept)"),
        _card(f"{train[-1]:.3f}" if train else "n/a", f"final training {loss}, nats/row"),
    ]
    chosen = chosen_epoch_count(getattr(detector, "epoch_scores_", None))
    if chosen is not None:  # no early-stopping rows: the count came from cross-validation
        cards.append(_card(chosen, "epoch count chosen by cross-validation"))
    else:
        cards += [
            _card(f"{val[-1]:.3f}" if val else "n/a", f"final held-out {loss}, nats/row"),
            _card(f"{val[best - 1]:.3f}" if val and 1 <= best <= len(val) else "n/a", f"best held-out {loss}, nats/row"),
        ]
    cards.append(_card(len(detector.validation_scores_), "calibration rows"))
    if getattr(detector, "trim_fraction", None):
        cards += [
            _card(len(getattr(detector, "training_set_aside_", ())), "training rows set aside (trim_fraction)"),
            _card(len(getattr(detector, "calibration_excluded_", ())), "calibration rows excluded (trim_fraction)"),
        ]
    band_notes = describe_band(detector.validation_scores_, detector.thresholds_, percentiles,
                               getattr(detector, "false_rejection_", None),
                               folds=getattr(detector, "calibration_folds_", None))
    settings = pd.DataFrame(
        {
            "setting": ["latent_dim", "hidden_layer_sizes", "likelihood", "n_importance_samples",
                        "posterior_search_steps", "search_threshold_", "column_relations", "continuous_family",
                        "handle_missing", "n_features_in_"],
            "value": [str(detector.latent_dim), str(tuple(detector.hidden_layer_sizes)), str(detector.likelihood),
                      str(detector.n_importance_samples), str(detector.posterior_search_steps),
                      f"{search_threshold(detector):.3g}",
                      str(detector.column_relations), str(detector.continuous_family),
                      str(detector.handle_missing), str(detector.n_features_in_)],
        }
    )
    columns = _columns_table(detector.schema_.columns)
    kinds = Counter(spec.value_kind for spec in detector.schema_.columns)
    kind_text = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    parts = [
        "<h2>Model</h2>",
        '<div class="summary">' + "".join(cards) + "</div>",
        '<p class="note">A row is valid when its log p(x) lies inside the band. log p(x) is the '
        "importance-sampled log-likelihood of the whole row under the VAE, in nats; higher is more typical.</p>",
        '<p class="note">Training: ' + _esc(describe_epochs(detector)) + ".</p>",
        '<p class="note">Band: ' + _esc("; ".join(band_notes)) + ". A rejected row's p-value is its rank "
        "among the calibration rows' log p(x): the share of valid rows at least as unusual.</p>",
        '<div class="side"><div><h3>Settings</h3>' + _table(settings, index=False) + "</div>",
        f"<div><h3>Columns ({_esc(kind_text)})</h3>" + _table(columns, index=False) + "</div></div>",
        _relations_note(detector),
        _trim_note(detector),
        "<h3>Training</h3>",
        _img(plotting.plot_training(detector), "loss per epoch"),
        *([_img(plotting.plot_epoch_scores(detector), "cross-validated held-out log p(x) of each epoch count")]
          if chosen is not None else []),
        _img(plotting.plot_proposal_refit(detector), "importance-sampling bound during the proposal refit"),
    ]
    return "\n".join(parts)


#: relations the report lists
SHOWN_RELATIONS = 8


def _relations_note(detector):
    """The strongest learned relations between columns, or '' without them."""
    strongest = detector.relations(SHOWN_RELATIONS)
    if not len(strongest):
        return ""
    strongest["coefficient"] = strongest["coefficient"].map("{:+.3f}".format)
    return ("<h3>Strongest relations between columns</h3>"
            '<p class="note">Each numeric column\'s location moves linearly with the residuals of the numeric '
            "columns before it and with the categories of the discrete ones (a parent named "
            "<code>column=category</code>); a discrete column's logits move with the categories before it. "
            "Coefficients in standardised units, nats for a logit; see <code>column_relations</code>.</p>"
            + _table(strongest, index=False))


#: row indices listed in the report's trim_fraction note, per kind
SHOWN_SET_ASIDE = 50


def _trim_note(detector):
    """Which rows ``trim_fraction`` set aside, or '' without it."""
    share = getattr(detector, "trim_fraction", None)
    if not share:
        return ""

    def listed(rows):
        rows = [int(r) for r in rows]
        more = f" and {len(rows) - SHOWN_SET_ASIDE} more" if len(rows) > SHOWN_SET_ASIDE else ""
        return (", ".join(map(str, rows[:SHOWN_SET_ASIDE])) + more) if rows else "none"

    aside = getattr(detector, "training_set_aside_", ())
    excluded = getattr(detector, "calibration_excluded_", ())
    return (f'<p class="note">trim_fraction={share:g}: the model was fitted by trimmed likelihood, without the '
            f"{len(aside)} training rows of least likelihood (rows of the training table, from 0: "
            f"{_esc(listed(aside))}), and the {len(excluded)} calibration rows of lowest log p(x) were left out "
            f"of the band (rows of the calibration rows' source, from 0: {_esc(listed(excluded))}). They are the "
            "likeliest bad rows among those trusted as valid: worth a look.</p>")


def _batch_section(detector, batch, random_state):
    frame = _as_frame(detector, batch)
    explanation, records = detector.explain(batch, return_records=True)
    explanation.index = frame.index
    names = [str(n) for n in detector.schema_.names]
    scores = explanation["log_px"].to_numpy(dtype=float)
    valid = explanation["is_valid"].to_numpy(dtype=bool)
    lower, upper = detector.thresholds_
    n_rows = len(frame)
    n_rejected = int((~valid).sum())
    n_below = int(np.sum(scores < lower)) if lower is not None else 0
    n_above = int(np.sum(scores > upper)) if upper is not None else 0
    share = n_rejected / n_rows if n_rows else 0.0
    cards = [
        _card(n_rows, "rows in the batch"),
        _card(f"{share:.1%}", f"rejected ({n_rejected} rows)", "bad" if n_rejected else "good"),
        _card(n_below, "below the band (unlikely)"),
        _card(n_above, "above the band (unusually typical)"),
        _card(f"{np.median(scores):.2f}" if n_rows else "n/a", "median log p(x), nats"),
    ]
    parts = [
        "<h2>Batch</h2>",
        '<div class="summary">' + "".join(cards) + "</div>",
        _img(
            plotting.plot_score_histogram(detector, {"batch": scores}),
            "histogram of log p(x): calibration rows, the band and the batch",
        ),
    ]
    if n_rows:
        parts += _drift_section(detector, batch, scores, random_state)
    if n_rejected:
        groups, named_anywhere = reason_groups(explanation, names, records)
        parts += [
            "<h3>Why rows were rejected</h3>",
            '<p class="note">Rejected rows grouped by the first column their reason names (the column whose '
            "value is the most nats less likely than typical, given the rest of the row).</p>",
            '<div class="side"><div>' + _table(groups.head(N_REASON_GROUPS), index=False) + "</div>",
        ]
        if len(named_anywhere):
            top = named_anywhere.head(N_REASON_GROUPS).rename_axis("column").reset_index()
            parts.append("<div>" + _table(top, index=False) + "</div>")
        parts.append("</div>")
        # positions, not labels: the batch's index may repeat
        rejected_positions = np.flatnonzero(~valid)
        by_score = rejected_positions[np.argsort(scores[~valid], kind="stable")]
        # the least likely first, then a few of the nearest to the band
        picked_positions = list(by_score[: N_EXAMPLE_ROWS - 2])
        picked_positions += [p for p in by_score[::-1] if p not in picked_positions][
            : N_EXAMPLE_ROWS - len(picked_positions)
        ]
        named = [c.column for p in picked_positions if records[p] is not None for c in records[p].columns]
        shown = _shown_columns(names, named)
        examples = frame.iloc[picked_positions][[frame.columns[names.index(n)] for n in shown]].copy()
        # allow_duplicates: the batch may have columns of these names too
        examples.insert(0, "log p(x)", explanation["log_px"].iloc[picked_positions].to_numpy(), allow_duplicates=True)
        examples.insert(
            examples.shape[1], "reason", explanation["reason"].iloc[picked_positions].to_numpy(), allow_duplicates=True
        )
        parts += [
            "<h3>Rejected rows (examples)</h3>",
            _column_note(len(shown), len(names)),
            _table(examples),
        ]
    real = frame.loc[valid] if valid.any() else frame
    parts += _generated_section(detector, real, random_state, "accepted rows of the batch")
    return "\n".join(parts)


def _drift_section(detector, batch, scores, random_state):
    """The batch against the calibration rows: the drift test's verdict, edges and moved columns."""
    n_rows = len(scores)
    rows = np.arange(n_rows)
    if n_rows > N_DRIFT_COLUMN_ROWS:
        rows = np.sort(np.random.RandomState(random_state).choice(n_rows, N_DRIFT_COLUMN_ROWS, replace=False))
    sample = batch.iloc[rows] if isinstance(batch, pd.DataFrame) else np.asarray(batch)[rows]
    report = detector.drift_report(sample, log_px=scores)
    cards = [_card("yes" if report.drift else "no", f"drift at alpha={report.alpha:g} (p={report.p_value:.2g})",
                   "bad" if report.drift else "good")]
    for test in (report.below, report.above, report.tail):
        if test is not None:
            where = "below the calibration's 1% tail" if test.side == "far below" else f"{test.side} the band"
            cards.append(_card(f"{test.share:.1%}", f"{where}; expected {test.expected_share:.1%} "
                                                    f"(p={test.p_value:.2g})"))
    cards.append(_card(f"{report.median_shift_nats:+.2f}", f"median log p(x) shift, nats "
                                                           f"(rank test p={report.rank_p_value:.2g})"))
    parts = [
        "<h2>Drift</h2>",
        '<div class="summary">' + "".join(cards) + "</div>",
        f'<p class="note">The batch\'s {report.n_rows} scored rows against the {report.n_calibration} calibration '
        "rows: the shares beyond the band's edges and below the calibration scores' 1st percentile against their expectation under no drift (beta-binomial "
        "tests), a Mann-Whitney test of log p(x), and one per column of log p(x_j | z); Holm-corrected, so a "
        "batch exchangeable with the calibration rows raises the alarm with probability at most alpha.</p>",
    ]
    if report.columns:
        moved = pd.DataFrame([{"column": c.column, "median shift, nats": c.shift_nats, "adjusted p": c.p_value}
                              for c in report.columns])
        parts += [f"<h3>Columns that moved ({report.n_column_rows} rows compared)</h3>", _table(moved, index=False)]
    elif report.note:
        parts.append(f'<p class="note">{_esc(report.note)}</p>')
    else:
        parts.append('<p class="note">No column moved significantly.</p>')
    return parts


def _column_note(n_shown, n_total):
    if n_shown < n_total:
        return f'<p class="note">Showing {n_shown} of {n_total} columns.</p>'
    return ""


def _generated_section(detector, real, random_state, real_label):
    names = [str(n) for n in detector.schema_.names]
    generated = _as_frame(detector, detector.sample(N_EXAMPLE_ROWS, random_state=random_state))
    shown = _shown_columns(names)
    positions = [names.index(n) for n in shown]
    heading = "Generated rows beside real ones" if real is not None and len(real) else "Generated rows"
    parts = [f"<h2>{heading}</h2>",
             '<p class="note">Generated: z ~ N(0, I), then x ~ p(x | z). If they look unlike the real rows, '
             "the model has not learned the table well and its scores deserve less trust.</p>",
             _column_note(len(shown), len(names)),
             '<div class="side">']
    if real is not None and len(real):
        rows = np.sort(np.random.RandomState(random_state).choice(len(real), min(N_EXAMPLE_ROWS, len(real)),
                                                                  replace=False))
        parts.append(f"<div><h3>Real ({_esc(real_label)})</h3>" + _table(real.iloc[rows, positions]) + "</div>")
    parts.append("<div><h3>Generated</h3>" + _table(generated.iloc[:, positions], index=False) + "</div>")
    parts.append("</div>")
    return parts


# ------------------------------------------------------------------- public
def build_report(detector, batch=None, title="vaefilter report", random_state=0):
    """The report as one self-contained HTML string.

    Parameters
    ----------
    detector : fitted VAEOutlierDetector
    batch : array-like or DataFrame, optional
        Rows to check: the report then shows the rejected share, the score
        histogram with the band, the most frequent rejection reasons,
        examples of rejected rows and generated rows beside accepted ones.
    title : str, default='vaefilter report'
    random_state : int, default=0
        Seed of the generated rows and of the real rows shown beside them.

    Returns
    -------
    html : str
        A complete HTML document: inline CSS, PNG pictures as data URIs, no
        scripts and no external links.
    """
    check_is_fitted(detector)
    plotting.require_matplotlib()
    body = [f"<h1>{_esc(title)}</h1>", _model_section(detector)]
    if batch is not None:
        body.append(_batch_section(detector, batch, random_state))
    else:
        body += [
            "<h2>Calibration scores</h2>",
            _img(plotting.plot_score_histogram(detector, {}), "histogram of calibration log p(x) and the band"),
        ]
        body += _generated_section(detector, None, random_state, "")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + '\n<p class="note">Made by vaefilter.</p>\n</body>\n</html>\n'
    )


def write_report(detector, path, batch=None, title="vaefilter report", random_state=0):
    """Write :func:`build_report`'s HTML to ``path`` (UTF-8; ``"-"``: standard output); return the path."""
    page = build_report(detector, batch=batch, title=title, random_state=random_state)
    if os.fspath(path) == "-":  # as the CSV outputs take it; it used to create a file named '-'
        if sys.stdout is None:  # '>&-'
            raise OSError(errno.EBADF, "standard output is closed", "-")
        sys.stdout.flush()  # text printed before comes first
        if hasattr(sys.stdout, "buffer"):
            sys.stdout.buffer.write(page.encode("utf-8"))
            sys.stdout.buffer.flush()
        else:  # a notebook's stdout
            sys.stdout.write(page)
        return path
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
