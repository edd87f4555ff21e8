"""How should small tables be trained? Held-out log p(x) on the small tuning tasks, label-free.

On ``choose_defaults.small_tuning_tasks()`` (84-309 training rows; no reported benchmark uses
them), mean held-out log p(x) of each task's test rows, nats/row, per seed:

* ``--validation``: the defaults at ``validation_fraction`` 0.1 (the default), 0.2, 0.3;
* ``--fixed``: no early-stopping split (``validation_fraction=0``), ``max_epochs`` 50, 100,
  200, 400, and the defaults beside them;
* ``--kfold``: the epoch count (of 100, 200, 400) with the best mean held-out log p(x) over 3
  folds of the training rows (each fold scored by a fit on the other two), then one fit on every
  training row at that count.

Command: ``cd benchmarks && PYTHONPATH=.. python check_small_tables.py --kfold --seed 0`` (about
12 minutes on one thread; ``--validation`` 4, ``--fixed`` 6). RESULTS.md
``small_tables_validation_fraction``, ``small_tables_fixed_epochs``, ``small_tables_kfold_epochs``.
"""
import argparse
import warnings

import numpy as np
import pandas as pd

import choose_defaults
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    for name in ("validation", "fixed", "kfold"):
        what.add_argument(f"--{name}", dest="what", action="store_const", const=name)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="*", help="task names (default: all small tuning tasks)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    measure = {"validation": validation, "fixed": fixed, "kfold": kfold}[args.what]
    for name, params, train, test in choose_defaults.small_tuning_tasks():
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
