"""Structured explanations: records built once, the reason text rendered from them, read back the same."""

import numpy as np

from vaefilter.columns import ColumnSpec, TableSchema
from vaefilter.explanations import (
    ABOVE_BAND,
    DEFICIT,
    JOINTLY_UNLIKELY,
    MISSING,
    OUT_OF_SUPPORT,
    UNSEEN_CATEGORY,
    ColumnProblem,
    Explanation,
    explain_rows,
    parse_reason,
    render_reasons,
)

SCHEMA = TableSchema([
    ColumnSpec("sex", "categorical", categories=["female", "male"], dtype="category"),
    ColumnSpec("age", "numeric", value_kind="positive"),
    ColumnSpec("fare", "numeric", value_kind="nonnegative"),
    ColumnSpec("a=b", "numeric"),
])
BAND = (-14.8, -3.0)


def test_records_name_each_kind_of_problem_and_render_the_reason_text():
    # row 0: a value out of support, an unseen category (values training never saw first), a deficit; row 1: a missing cell;
    # row 2: nothing stands out; row 3: inside the band; row 4: above the band
    X_model = np.array([[2.0, -1.0, 3.0, 0.0], [0.0, 30.0, np.nan, 0.0], [0.0, 30.0, 3.0, 0.0],
                        [0.0, 30.0, 3.0, 0.0], [0.0, 30.0, 3.0, 0.0]])
    values = [["femal", -1.0, 3.0, 7], ["male", 30.0, None, 7], ["male", 30.0, 3.0, 7], ["male", 30.0, 3.0, 7],
              ["male", 30.0, 3.0, 7]]
    deficits = np.array([[0.5, 6.8, 0.2, 3.44], [0.0, 0.0, 9.0, 0.0], [0.2] * 4, [0.0] * 4, [0.0] * 4])
    log_px = np.array([-25.6, -20.0, -30.0, -8.0, -1.5])
    records = explain_rows(log_px, BAND, deficits, values, SCHEMA, X_model)

    first = records[0]
    assert [(c.column, c.problem) for c in first.columns] == [("age", OUT_OF_SUPPORT), ("sex", UNSEEN_CATEGORY),
                                                               ("a=b", DEFICIT)]
    assert first.problem == OUT_OF_SUPPORT and first.columns[2].deficit == 3.44 and first.columns[2].value == 7
    assert records[1].columns[0] == ColumnProblem("fare", MISSING, 9.0, None, "missing (never missing in training)")
    assert records[2].problem == JOINTLY_UNLIKELY and records[2].columns == ()
    assert records[3] is None
    assert records[4] == Explanation(-1.5, "above", -3.0) and records[4].problem == ABOVE_BAND

    texts = render_reasons(records)
    assert texts[0] == (
        "log p(x)=-25.6 below the band's lower edge -14.8: age=-1 (6.8 nats below typical, out of support: -1 in "
        "a column that was always positive); sex='femal' (0.5 nats below typical, a category never seen in "
        "training); a=b=7 (3.4 nats below typical)"
    )
    assert texts[2] == "log p(x)=-30.0 below the band's lower edge -14.8: jointly unlikely: no single column stands out"
    assert texts[3] == ""
    assert texts[4] == ("log p(x)=-1.5 above the band's upper edge -3.0: unusually typical row (likelihood models "
                        "score some anomalies, e.g. constant or blank rows, too high)")

    # read back: the same columns, kinds and (rounded) numbers; the render of the read-back record is the text
    for record, text in zip(records, texts):
        back = parse_reason(text, SCHEMA.names)
        if record is None:
            assert back is None
            continue
        assert back.problem == record.problem and back.side == record.side
        assert [(c.column, c.problem, c.note) for c in back.columns] == [
            (c.column, c.problem, c.note) for c in record.columns]
        assert [round(c.deficit, 1) for c in back.columns] == [round(c.deficit, 1) for c in record.columns]
        assert back.log_px == round(record.log_px, 1) and back.edge == record.edge
    assert parse_reason(texts[0], SCHEMA.names).columns[2].value == "7"  # values come back as their text


def test_unknown_text_reads_back_as_none():
    assert parse_reason("unparseable: line 3: expected 2 fields, found 1", ["a"]) is None
    assert parse_reason("", ["a"]) is None


# ------------------------------------------------ the vectorised records against the per-row rule
KINDS_SCHEMA = TableSchema([
    ColumnSpec("cat", "categorical", categories=["a", "b", "c"], dtype="category"),
    ColumnSpec("cat_missing", "categorical", categories=["x", "y"], has_missing=True, dtype="category"),
    ColumnSpec("count", "numeric", value_kind="count"),
    ColumnSpec("integer", "numeric", value_kind="integer", has_missing=True),
    ColumnSpec("positive", "numeric", value_kind="positive"),
    ColumnSpec("nonnegative", "numeric", value_kind="nonnegative", has_missing=True),
    ColumnSpec("binary", "binary", dtype="bool"),
    ColumnSpec("proportion", "numeric", value_kind="proportion"),
    ColumnSpec("continuous", "numeric"),
])


def _per_row_records(log_px, thresholds, deficits, values, schema, X_model):
    """The rule explain_rows implemented cell by cell before it was vectorised (the reference)."""
    from vaefilter.explanations import MAX_COLUMNS_NAMED, MIN_DEFICIT_NATS, cell_problem

    lower, upper = thresholds
    names = [str(n) for n in schema.names]
    records = []
    for i, score in enumerate(log_px):
        if lower is not None and score < lower:
            problems = [cell_problem(schema, j, X_model[i, j]) for j in range(len(names))]
            flagged = np.array([bool(note) for _, note in problems])
            order = np.lexsort((-deficits[i], ~flagged))[:MAX_COLUMNS_NAMED]
            named = []
            for j in order:
                kind, note = problems[j]
                if deficits[i, j] < MIN_DEFICIT_NATS and not note:
                    break
                named.append(ColumnProblem(names[j], kind, float(deficits[i, j]), values[i][j], note))
            records.append(Explanation(float(score), "below", float(lower), tuple(named)))
        elif upper is not None and score > upper:
            records.append(Explanation(float(score), "above", float(upper)))
        else:
            records.append(None)
    return records


def _random_cells(rng, n):
    """Model-matrix rows mixing values inside and outside each column's support, unseen codes and missing cells."""
    choices = [
        [0.0, 1.0, 2.0, 3.0, np.nan],  # 3: unseen category; NaN: never missing
        [0.0, 1.0, 2.0, np.nan],
        [0.0, 4.0, 2.5, -1.0, np.nan],
        [-3.0, 7.0, 0.5, np.nan],
        [0.1, 5.0, 0.0, -2.0, np.nan],
        [0.0, 3.5, -0.5, np.nan],
        [0.0, 1.0, 0.5, np.nan],
        [0.0, 0.3, 1.0, 1.5, -0.1, np.nan],
        [-1e3, 0.0, 2.0, np.nan],
    ]
    return np.column_stack([rng.choice(c, size=n, p=None) for c in choices])


def test_vectorised_records_equal_the_per_row_rule_on_every_kind_of_cell():
    rng = np.random.default_rng(0)
    n = 3000
    X_model = _random_cells(rng, n)
    # deficits with ties, values around the naming floor, a few NaN
    deficits = rng.choice([0.0, 0.5, 0.99, 1.0, 2.5, 2.5, 7.0, 40.0], size=X_model.shape) + rng.choice(
        [0.0, 0.0, 0.0, rng.normal()], size=X_model.shape)
    deficits[rng.random(X_model.shape) < 0.01] = np.nan
    values = [[f"v{i}_{j}" if j < 2 else X_model[i, j] for j in range(X_model.shape[1])] for i in range(n)]
    log_px = rng.normal(-10, 8, size=n)
    log_px[rng.random(n) < 0.02] = np.nan
    for band in [(-14.8, -3.0), (-14.8, None), (None, -3.0), (-9.0, -9.0)]:
        got = explain_rows(log_px, band, deficits, values, KINDS_SCHEMA, X_model)
        want = _per_row_records(log_px, band, deficits, values, KINDS_SCHEMA, X_model)
        assert repr(got) == repr(want)  # repr: a NaN deficit equals itself there
        assert render_reasons(got) == render_reasons(want)
    # each kind of problem occurs, so the comparison covers them
    kinds = {c.problem for r in got if r is not None for c in r.columns}
    assert kinds == {DEFICIT, MISSING, UNSEEN_CATEGORY, OUT_OF_SUPPORT}


def test_outside_support_is_where_describe_cell_has_words():
    X_model = _random_cells(np.random.default_rng(1), 500)
    mask = KINDS_SCHEMA.outside_support(X_model)
    words = np.array([[bool(KINDS_SCHEMA.describe_cell(j, v)) for j, v in enumerate(row)] for row in X_model])
    assert mask.any() and (mask == words).all()


def _small_titanic_detector(**params):
    import pandas as pd  # noqa: F401

    from vaefilter import VAEOutlierDetector
    from vaefilter.datasets import load_titanic

    frame = load_titanic().drop(columns=["survived"]).iloc[:400].reset_index(drop=True)
    det = VAEOutlierDetector(latent_dim=2, hidden_layer_sizes=(16,), max_epochs=3, n_importance_samples=20,
                             proposal_steps=0, handle_missing="model", random_state=0, **params).fit(frame)
    return det, frame


def _faulty_rows(frame):
    import pandas as pd

    rows = frame.iloc[:60].copy()
    rows = rows.astype({c: float for c in ("sibsp", "pclass", "fare", "age")})
    rows["sex"] = rows["sex"].cat.add_categories(["femal"])
    rows.loc[0:9, "sex"] = "femal"  # unseen category
    rows.loc[10:19, "sibsp"] = 2.5  # out of support: a whole-number column
    rows.loc[20:29, "fare"] = -5.0  # out of support: never negative
    rows.loc[30:39, "pclass"] = None  # missing where training never was
    rows.loc[40:49, "age"] = rows.loc[40:49, "age"] * 100
    return rows


def test_explain_reasons_equal_the_per_row_rule_on_its_own_deficits():
    det, frame = _small_titanic_detector()
    rows = _faulty_rows(frame)
    for sequential in (False, True):
        explained, records = det.explain(rows, return_records=True, sequential=sequential)
        deficits = explained[list(det.schema_.names)].to_numpy()
        want = _per_row_records(explained["log_px"].to_numpy(), det.thresholds_, deficits,
                                rows.to_numpy(dtype=object), det.schema_, det.schema_.encode(rows))
        assert repr(records) == repr(want)
        assert explained["reason"].tolist() == render_reasons(want)
        kinds = {c.problem for r in records if r is not None for c in r.columns}
        assert {UNSEEN_CATEGORY, OUT_OF_SUPPORT, MISSING} <= kinds


def test_conditioned_deficits_take_at_most_their_share_of_k_draws(monkeypatch):
    import vaefilter.estimator as estimator

    det, frame = _small_titanic_detector(threshold_percentiles=(90, None))
    rows = _faulty_rows(frame)
    seen = []
    original = estimator.log_marginal_without_columns

    def recording(network, X, columns, k, seed, *args, **kwargs):
        seen.append(k)
        return original(network, X, columns, k, seed, *args, **kwargs)

    monkeypatch.setattr(estimator, "log_marginal_without_columns", recording)
    capped = det.explain(rows)
    assert seen == [6]  # ceil(0.3 * 20), every row below the band at full K
    seen.clear()
    monkeypatch.setattr(estimator, "CONDITIONED_DRAW_SHARE", None)
    uncapped = det.explain(rows)
    assert seen == [20]
    # the cap moves the conditioned candidates' numbers, not the scores
    np.testing.assert_array_equal(capped["log_px"], uncapped["log_px"])


def test_candidates_below_the_posterior_deficit_floor_are_not_conditioned(monkeypatch):
    import vaefilter.estimator as estimator

    det, frame = _small_titanic_detector()
    X_model = det.schema_.encode(frame.iloc[:3])
    log_px = det.score_samples(frame.iloc[:3])
    n_features = X_model.shape[1]
    deficits = np.zeros((3, n_features))
    deficits[:, :4] = [5.0, 0.2, 3.0, 0.49]  # the four candidates: two reach the 0.5-nat floor
    sent = []
    original = estimator.log_marginal_without_columns

    def recording(network, X, columns, k, seed, *args, **kwargs):
        sent.append(np.asarray(columns).copy())
        return original(network, X, columns, k, seed, *args, **kwargs)

    monkeypatch.setattr(estimator, "log_marginal_without_columns", recording)
    conditioned = deficits.copy()
    det._condition_deficits(X_model, log_px, conditioned, np.arange(3))
    assert sorted(np.concatenate(sent).ravel().tolist()) == [0, 0, 0, 2, 2, 2]
    np.testing.assert_array_equal(conditioned[:, [1, 3]], deficits[:, [1, 3]])  # kept as they were
    assert (conditioned[:, [0, 2]] >= deficits[:, [0, 2]]).all()
    sent.clear()
    monkeypatch.setattr(estimator, "CONDITIONED_MIN_DEFICIT", None)
    det._condition_deficits(X_model, log_px, deficits.copy(), np.arange(3))
    assert sorted(np.concatenate(sent).ravel().tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_a_long_cell_is_quoted_cut_in_a_reason():
    det, frame = _small_titanic_detector()
    row = frame.iloc[:1].copy()
    row["sex"] = row["sex"].astype(object)
    row.loc[row.index[0], "sex"] = "m" * 100_000
    reason = det.explain(row)["reason"].iloc[0]
    assert "never seen" in reason and "(100000 characters)" in reason
    assert len(reason) < 400
