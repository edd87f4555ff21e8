"""Does a change to the posterior search cost accuracy? A reduced K=100 vs K=5000 gap table.

For each task and seed: fit at the defaults (the fitted model is cached, so a
before/after comparison scores the same networks), then score the split's test
inliers at K=100 and K=5000 and all test rows at K=100 (ROC-AUC of -log p(x)); the inliers' K=100
estimate is averaged over ``--draw-seeds`` importance seeds (so that the
mean gap measures the proposal, not one set of draws),
timing K=100 with the search on and off by turns. ``--tag`` names the run's
saved results; ``--compare A B`` prints the gap of B's K=100 estimate to A's
and to B's own K=5000 reference (a cheaper search could make the reference
worse too, so A's reference is the fair one), and both AUCs.

    python benchmarks/check_search_gap.py --tag before
    python benchmarks/check_search_gap.py --tag after
    python benchmarks/check_search_gap.py --compare before after
    python benchmarks/check_search_gap.py --profile [TABLE]   # where scoring digits (or TABLE) spends its time

``--profile`` fits bench_speed's digits model (the whole table, random_state=0,
handle_missing='model'; cached), scores the table three times under cProfile (at
the model's own flag threshold, ``search_threshold_``) and
prints each stage's share, with the posterior search's evaluations of the
derivatives and of log p(x, z) per searched row.

Tasks: digits classes 5-9 as inliers (where constants were chosen), and the
report tasks digits-0to4, breast-cancer, arrhythmia, cardio.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import time

import numpy as np
import torch
from sklearn import datasets as skd
from sklearn.metrics import roc_auc_score

import datasets as ds
import mixed_tables
from vaefilter import VAEOutlierDetector
from vaefilter.scoring.posterior_search import SEARCH_THRESHOLD

CACHE = os.environ.get("SEARCH_GAP_CACHE", "/tmp/vaefilter_search_gap")
TUNE = ("digits-5to9",)
REPORT = ("digits-0to4", "breast-cancer", "arrhythmia", "cardio")


def task(name):
    if name == "digits-5to9":
        d = skd.load_digits()
        X, y = d.data.astype(float), d.target
        return ds.Task(name, "digits-5to9-vs-0to4", X[y >= 5], X[y <= 4])
    if name == "digits-0to4":
        return ds.digits_half_task()
    if name == "breast-cancer":
        return ds.breast_cancer_task()
    return {t.name: t for t in ds.odds_tasks()}[name]


def fitted(t, seed, sp):
    path = os.path.join(CACHE, f"{t.name}-{seed}.pkl")
    if os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)
    det = VAEOutlierDetector(random_state=seed, device="cpu").fit(sp.X_train_raw)
    os.makedirs(CACHE, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(det, f)
    return det


def fitted_test_rows(name, seed):
    """The model fitted at the defaults (cached), its test rows and their labels (1 = outlier).

    A mixed table (``mixed:<table>``, see mixed_tables.py) has no outliers:
    its clean test split, all labelled 0.
    """
    if not name.startswith("mixed:"):
        t = task(name)
        sp = ds.split(t, seed)
        return fitted(t, seed, sp), sp.X_test_raw, sp.y_test
    train, test, *_ = mixed_tables.split(name.split(":", 1)[1], seed)
    path = os.path.join(CACHE, f"{name.replace(':', '-')}-{seed}.pkl")
    if os.path.exists(path):
        with open(path, "rb") as f:
            det = pickle.load(f)
    else:
        det = VAEOutlierDetector(handle_missing="model", random_state=seed, device="cpu").fit(train)
        os.makedirs(CACHE, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump(det, f)
    return det, test, np.zeros(len(test), dtype=int)


def timed(f, turns=3):
    best = np.inf
    for _ in range(turns):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best


def run(names, seeds, draw_seeds, fixed_threshold=False):
    out = {}
    for name in names:
        for seed in seeds:
            det, X_test, y_test = fitted_test_rows(name, seed)
            if fixed_threshold:  # every row the flag marks, as before posterior_search_tolerance
                det.search_threshold_ = SEARCH_THRESHOLD
            X_in = X_test[y_test == 0]
            steps = det.posterior_search_steps
            det.set_params(n_importance_samples=100)
            s_all = det.score_samples(X_test)
            # the K=100 estimate under other draws too: its mean gap is the proposal's, less the draws' noise
            s100 = [s_all[y_test == 0]]
            for extra in range(1, draw_seeds):
                det.importance_seed_ += extra
                s100.append(det.score_samples(X_in))
                det.importance_seed_ -= extra
            searched = float(det._log_marginal(det._validate_for_scoring(X_test)).searched.mean())
            s_ref = det.set_params(n_importance_samples=5000).score_samples(X_in)
            det.set_params(n_importance_samples=100)
            t_search, t_plain = [], []
            for _ in range(3):
                t_search.append(timed(lambda: det.score_samples(X_test), 1))
                det.set_params(posterior_search_steps=0)
                t_plain.append(timed(lambda: det.score_samples(X_test), 1))
                det.set_params(posterior_search_steps=steps)
            out[f"{name}/{seed}"] = dict(
                s100=np.mean(s100, axis=0).tolist(), s5000=s_ref.tolist(), y=y_test.tolist(),
                s_all=s_all.tolist(), searched=searched, t_search=min(t_search), t_plain=min(t_plain),
                search_threshold=float(det.search_threshold_))
            r = out[f"{name}/{seed}"]
            print(f"{name} seed {seed}: gap {np.mean(r['s100']) - np.mean(s_ref):+.4f}, searched {searched:.0%}, "
                  f"AUC {_auc(y_test, s_all):.4f}, time x{r['t_search'] / r['t_plain']:.2f}", flush=True)
    return out


def compare(a, b):
    A, B = (json.load(open(os.path.join(CACHE, f"{tag}.json"))) for tag in (a, b))
    print(f"| task/seed | gap {a} | gap {b} vs {a}'s K=5000 | gap {b} vs own K=5000 | AUC {a} | AUC {b} | "
          f"searched {a} → {b} | threshold {b} | search cost × {a} | × {b} | {b} - {a} per row, mean ± s.e. |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in A:
        if key not in B:
            continue
        ra, rb = A[key], B[key]
        ref = np.asarray(ra["s5000"])
        auc = [_auc(r["y"], r["s_all"]) for r in (ra, rb)]
        print(f"| {key} | {np.mean(np.asarray(ra['s100']) - ref):+.4f} | {np.mean(np.asarray(rb['s100']) - ref):+.4f} | "
              f"{np.mean(np.asarray(rb['s100']) - np.asarray(rb['s5000'])):+.4f} | {auc[0]:.4f} | {auc[1]:.4f} | "
              f"{ra['searched']:.0%} → {rb['searched']:.0%} | {rb.get('search_threshold', float('nan')):.3g} | "
              f"{ra['t_search'] / ra['t_plain']:.2f} | {rb['t_search'] / rb['t_plain']:.2f} | "
              f"{_paired(ra, rb)} |")
    means = {}
    for key in A:
        if key in B:
            means.setdefault(key.split("/")[0], []).append(
                [np.mean(np.asarray(r["s100"]) - np.asarray(A[key]["s5000"])) for r in (A[key], B[key])])
    print(f"\n| task (mean over seeds) | gap {a} | gap {b} vs {a}'s K=5000 |\n|---|---:|---:|")
    for name, gaps in means.items():
        print(f"| {name} | {np.mean(gaps, axis=0)[0]:+.4f} | {np.mean(gaps, axis=0)[1]:+.4f} |")


def _auc(y, scores):
    """ROC-AUC of -log p(x); nan for a mixed table's clean test rows (no outliers)."""
    y = np.asarray(y)
    return roc_auc_score(y, -np.asarray(scores)) if 0 < y.sum() < len(y) else float("nan")


def _paired(ra, rb):
    """Mean and standard error over rows of the difference between two runs' K=100 estimates."""
    diff = np.asarray(rb["s100"]) - np.asarray(ra["s100"])
    return f"{diff.mean():+.4f} ± {diff.std(ddof=1) / np.sqrt(len(diff)):.4f}"


PROFILED = {
    "log_weights": "scoring passes (decoder K times, weights; incl. mixture draws)",
    "mixture_draws": "  of which mixture draws (searched rows)",
    "keyed_normal": "row noise",
    "search_in_passes": "search, all",
    "_rows_to_search": "  which rows (misplacement test)",
    "search_rows": "  the search",
    "_derivatives": "    derivatives (value, gradient, Hessian)",
    "_line_search": "    line search",
    "_value_and_gradient": "    gradient at the mean (q's step)",
    "_eigen": "    eigendecompositions",
}


def profile(table="digits", turns=3):
    import cProfile
    import pstats

    import mixed_tables
    from vaefilter.scoring import marginal, posterior_search

    X = skd.load_digits().data.astype(np.float64) if table == "digits" else mixed_tables.load(table)[0]
    path = os.path.join(CACHE, f"profile-{table}.pkl")
    if os.path.exists(path):
        with open(path, "rb") as f:
            det = pickle.load(f)
    else:
        det = VAEOutlierDetector(random_state=0, handle_missing="model", device="cpu").fit(X)
        os.makedirs(CACHE, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump(det, f)
    X_model = torch.tensor(det._validate_for_scoring(X), dtype=torch.float32)
    counts = {"_derivatives": 0, "log_joint": 0}
    searching = []
    for name in counts:
        def counted(network, x, z, _name=name, _function=getattr(posterior_search, name)):
            counts[_name] += x.shape[0] if searching else 0
            return _function(network, x, z)
        setattr(posterior_search, name, counted)
    search_rows = marginal.search_rows

    def counting_search(*args, **kwargs):
        searching.append(True)
        try:
            return search_rows(*args, **kwargs)
        finally:
            searching.pop()

    marginal.search_rows = counting_search
    def score():
        return marginal.estimate_log_marginal(det.network_, X_model, 100, 0, search_steps=det.posterior_search_steps,
                                              search_threshold=det.search_threshold_)

    estimate = score()
    marginal.search_rows = search_rows
    n_searched = int(estimate.searched.sum())
    per_row = {k: v / n_searched for k, v in counts.items()}
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(turns):
        score()
    profiler.disable()
    seconds = {}
    for (path, _, name), (_, _, _, cumulative, _) in pstats.Stats(profiler).stats.items():
        if "vaefilter" in path and (name in PROFILED or name == "estimate_log_marginal"):
            seconds[name] = seconds.get(name, 0.0) + cumulative / turns
    total = seconds["estimate_log_marginal"]
    print(f"{table}, {len(X)} rows, {n_searched} searched; per searched row: "
          f"{per_row['_derivatives']:.2f} evaluations of the derivatives, {per_row['log_joint']:.2f} of log p(x, z) "
          "(the rows of padded passes included)\n")
    print(f"| stage | s per score of the table | share |\n|---|---:|---:|\n| total | {total:.3f} | 100% |")
    for name, label in PROFILED.items():
        if name in seconds:
            print(f"| {label} | {seconds[name]:.3f} | {seconds[name] / total:.0%} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tag")
    p.add_argument("--tasks", nargs="*", default=list(TUNE + REPORT))
    p.add_argument("--seeds", nargs="*", type=int, default=[0])
    p.add_argument("--draw-seeds", type=int, default=4,
                   help="K=100 estimates per row, each under other importance draws, averaged")
    p.add_argument("--compare", nargs=2)
    p.add_argument("--fixed-threshold", action="store_true",
                   help="score with the fixed flag threshold (every row above 2 searched), not the model's own")
    p.add_argument("--profile", nargs="?", const="digits", metavar="TABLE",
                   help="profile scoring digits (the default) or a table of mixed_tables.py")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.profile:
        profile(args.profile)
        return
    if args.compare:
        compare(*args.compare)
        return
    out = run(args.tasks, args.seeds, args.draw_seeds, args.fixed_threshold)
    path = os.path.join(CACHE, f"{args.tag}.json")
    if os.path.exists(path):
        out = {**json.load(open(path)), **out}
    with open(path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
