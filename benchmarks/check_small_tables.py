"""How should small tables be trained? Held-out log p(x) on the small tuning tasks, label-free.

On ``choose_defaults.small_tuning_tasks()`` (84-309 training rows; no reported benchmark uses
them), mean held-out log p(x) of each task's test rows, nats/row, per seed:

* ``--validation``: the defaults at ``validation_fraction`` 0.1 (the default), 0.2, 0.3;
* ``--fixed``: no early-stopping split (``validation_fraction=0``), ``max_epochs`` 50, 100,
  200, 400, and the defaults beside them;
* ``--rule``: the library's ``epoch_selection='cross_validation'`` against early stopping, the
  count chosen by each of three criteria (mean, mean without the lowest 5%, median of the
  held-out rows' scores) refitted; ``--medium N`` runs it on five tuning tables cut to N rows;
* ``--kfold``: the epoch count (of 100, 200, 400) with the best mean held-out log p(x) over 3
  folds of the training rows (each fold scored by a fit on the other two), then one fit on every
  training row at that count.

Command: ``cd benchmarks && PYTHONPATH=.. python check_small_tables.py --kfold --seed 0`` (about
12 minutes on one thread; ``--validation`` 4, ``--fixed`` 6). RESULTS.md
``small_tables_validation_fraction``, ``small_tables_fixed_epochs``, ``small_tables_kfold_epochs``.
"""
import argparse
import time
import warnings

import numpy as np
import pandas as pd

import choose_defaults
import vaefilter.estimator as estimator_module
from vaefilter import VAEOutlierDetector

FIXED_EPOCHS = (50, 100, 200, 400)
KFOLD_EPOCHS = (100, 200, 400)
N_FOLDS = 3


def _rows(X, index):
    return X.iloc[index] if isinstance(X, pd.DataFrame) else X[index]


def _held_out(seed, params, train, test, **setting):
    detector = VAEOutlierDetector(random_state=seed, **setting, **params).fit(train)
    return float(detector.score_samples(test).mean())


def validation(seed, params, train, test):
    return {f"validation_fraction={f}": _held_out(seed, params, train, test, validation_fraction=f)
            for f in (0.1, 0.2, 0.3)}


def fixed(seed, params, train, test):
    out = {f"{e} epochs, no split": _held_out(seed, params, train, test, validation_fraction=0.0, max_epochs=e)
           for e in FIXED_EPOCHS}
    out["defaults"] = _held_out(seed, params, train, test)
    return out


def kfold(seed, params, train, test):
    fold = np.random.RandomState(seed).permutation(len(train)) % N_FOLDS
    cv = {}
    for epochs in KFOLD_EPOCHS:
        cv[epochs] = np.mean([
            _held_out(seed, params, _rows(train, np.flatnonzero(fold != k)), _rows(train, np.flatnonzero(fold == k)),
                      validation_fraction=0.0, calibration_fraction=0.2, max_epochs=epochs)
            for k in range(N_FOLDS)])
    best = max(cv, key=cv.get)
    return {"epochs chosen": best,
            "held-out log p(x)": _held_out(seed, params, train, test, validation_fraction=0.0, max_epochs=best),
            **{f"cv at {e}": v for e, v in cv.items()}}


CRITERIA = {"mean": np.mean, "trimmed 5%": lambda v: np.sort(v)[int(0.05 * len(v)):].mean(), "median": np.median}


def rule(seed, params, train, test):
    """epoch_selection='cross_validation' under three criteria against early stopping, at the defaults.

    The per-row held-out scores of the cross-validation are read off the
    library's ``epoch_criterion``; the final fit at a count ``e`` is the
    same as ``validation_fraction=0, max_epochs=e`` with early stopping off
    (same split, same seeds), so each criterion's choice is refitted that way.
    """
    matrix = []

    def spy(log_px, trim_fraction=None):
        matrix.append(np.asarray(log_px, dtype=float))
        return original(log_px, trim_fraction)

    original = estimator_module.epoch_criterion
    estimator_module.epoch_criterion = spy
    try:
        start = time.perf_counter()
        detector = VAEOutlierDetector(random_state=seed, epoch_selection="cross_validation", **params).fit(train)
        out = {"cv s": round(time.perf_counter() - start, 1)}
    finally:
        estimator_module.epoch_criterion = original
    counts = [epochs for epochs, _ in detector.epoch_scores_]
    out["early_stopping"] = _held_out(seed, params, train, test, epoch_selection="early_stopping")
    fitted = {}
    for name, criterion in CRITERIA.items():
        epochs = counts[int(np.argmax([criterion(row) for row in matrix]))]
        if epochs not in fitted:
            fitted[epochs] = _held_out(seed, params, train, test, epoch_selection="early_stopping",
                                       validation_fraction=0.0, max_epochs=epochs)
        out[f"{name}: epochs"] = epochs
        out[f"{name}: difference"] = fitted[epochs] - out["early_stopping"]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    for name in ("validation", "fixed", "kfold", "rule"):
        what.add_argument(f"--{name}", dest="what", action="store_const", const=name)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="*", help="task names (default: all small tuning tasks)")
    parser.add_argument("--medium", type=int, metavar="N",
                        help="choose_defaults.medium_tuning_tasks(N) instead of the small tuning tasks")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    measure = {"validation": validation, "fixed": fixed, "kfold": kfold, "rule": rule}[args.what]
    tasks = choose_defaults.medium_tuning_tasks(args.medium) if args.medium else choose_defaults.small_tuning_tasks()
    for name, params, train, test in tasks:
        if args.tasks and name not in args.tasks:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = measure(args.seed, params, train, test)
        print(f"{name} ({len(train)} rows), seed {args.seed}: "
              + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()),
              flush=True)


if __name__ == "__main__":
    main()
