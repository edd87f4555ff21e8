"""How fast is vaefilter on a CPU, and how close does scoring get to the machine's matmul rate?

Fit time (seconds per epoch, epochs to early stop, total) and score_samples
throughput (rows/s at the default K=100) for rows in {1e4, 1e5} x features
{10, 30, 200}; the peak resident memory of each configuration (ru_maxrss of a
fresh subprocess); the machine's dense float32 matmul rate with torch (4096^3
and one scoring pass, 8192 draws per thread, through the 128-wide layer); the fraction of it that
scoring reaches, counting 2*in*out FLOPs per linear layer (encoder once per
row, decoder K times); PyOD's VAE at the same architecture (seconds per epoch).

    python benchmarks/bench_speed.py           # full
    python benchmarks/bench_speed.py --quick   # fewer epochs, smaller grid
    python benchmarks/bench_speed.py --quick --threads 1
    python benchmarks/bench_speed.py --real    # digits and the mixed-type tables

Fit timing: the full grid fits every configuration with the library
defaults (early stopping, proposal refit) and times the training loop on its
own for seconds/epoch; --quick trains a fixed 2 epochs instead. The threads
table trains a fixed 3 epochs. Scoring is timed on 10^4 fresh rows
(throughput is linear in rows), taking turns with a 4096^3 matmul so that
the fraction compares rates seen under the same load.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time

# torch's OpenMP runtime reads its wait policy once, when it loads: by default
# as the CLI runs (vaefilter sets OMP_WAIT_POLICY=PASSIVE, idle threads sleep),
# with --omp-spin as a process that loaded torch before vaefilter (libgomp's
# default: idle threads spin a while). Scoring in one thread with 2 torch threads
# is about 1.8x faster spinning; scoring in threads (n_jobs) does not depend on it.
if "--omp-spin" not in sys.argv[1:]:
    import vaefilter  # noqa: F401
import numpy as np
import torch

from _common import (HIDDEN, K_DEFAULT, LATENT, machine_line, make_data, matmul_rate, md_table, scoring_flops_per_row,
                     write_section)

SCORE_ROWS = 10**4


def single(n, d, epochs, threads):
    """One configuration, run in a fresh process so ru_maxrss is its own peak.

    ``epochs=0`` fits with the library defaults (early stopping, proposal
    refit); otherwise exactly ``epochs`` epochs. Scoring runs on SCORE_ROWS
    fresh rows from the same distribution, as a filter would see them.
    """
    torch.set_num_threads(threads)
    import vaefilter.estimator as estimator
    from vaefilter import VAEOutlierDetector

    stage_s = _time_stages(estimator, ("train", "refit_proposal"))
    X_all = make_data(n + SCORE_ROWS, d)
    X, X_new = X_all[:n], X_all[n:]
    fixed = {} if epochs == 0 else {"max_epochs": epochs, "n_iter_no_change": 10**6}
    det = VAEOutlierDetector(random_state=0, device="cpu", **fixed)
    t0 = time.perf_counter()
    det.fit(X)
    res = {"n": n, "d": d, "threads": threads, "fit_s": time.perf_counter() - t0, "epochs": det.n_iter_,
           "best_epoch": det.best_epoch_, "refit_s": stage_s["refit_proposal"]}
    # the training loop alone (each epoch includes its validation loss), without the band's scoring or the refit
    res["s_per_epoch"] = stage_s["train"] / det.n_iter_
    det.score_samples(X_new[:256])  # warm-up
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    res["searched"] = float(det._log_marginal(X_new).searched.mean())
    res["page_faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    # the peak of fit and scoring, before the matmul's 200 MB of matrices
    res["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["score_s"], res["matmul_gflops"] = _scoring_beside_matmul(det, X_new)
    res["score_rows_per_s"] = len(X_new) / res["score_s"]
    search_steps = det.posterior_search_steps
    res["score_rows_per_s_no_search"] = len(X_new) / _scoring_beside_matmul(
        det.set_params(posterior_search_steps=0), X_new)[0]
    det.set_params(posterior_search_steps=search_steps)
    res["gflops_scoring"] = scoring_flops_per_row(d, K_DEFAULT) * res["score_rows_per_s"] / 1e9
    return res


def _time_stages(module, names):
    """Wrap ``module``'s functions ``names`` to add their run time to the returned dict."""
    seconds = dict.fromkeys(names, 0.0)

    def timed(name, function):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - t0
        return wrapper

    for name in names:
        setattr(module, name, timed(name, getattr(module, name)))
    return seconds


def _scoring_beside_matmul(det, X, repeats=5):
    """Best scoring time of ``repeats`` runs and the best 4096^3 matmul rate, measured by turns.

    The machine is shared: taking turns exposes both to the same load, so
    their ratio is steadier than that of rates measured minutes apart.
    """
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    best_score, best_matmul = np.inf, np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best_matmul = min(best_matmul, time.perf_counter() - t0)
        t0 = time.perf_counter()
        det.score_samples(X)
        best_score = min(best_score, time.perf_counter() - t0)
    return best_score, 2 * 4096**3 / best_matmul / 1e9


def pyod_epoch(n, d, threads):
    torch.set_num_threads(threads)
    from pyod.models.vae import VAE

    X = make_data(n, d)
    m = VAE(encoder_neuron_list=list(HIDDEN), decoder_neuron_list=list(HIDDEN), latent_dim=LATENT, epoch_num=2,
            batch_size=128, dropout_rate=0.0, verbose=0, device="cpu", random_state=0)
    t0 = time.perf_counter()
    m.fit(X)
    fit = time.perf_counter() - t0
    Xs = X[: min(n, 20000)]
    t0 = time.perf_counter()
    m.decision_function(Xs)
    return {"n": n, "d": d, "s_per_epoch": fit / 2, "score_rows_per_s": len(Xs) / (time.perf_counter() - t0)}


def subprocess_json(args):
    cmd = [sys.executable, os.path.abspath(__file__)] + args
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if out.returncode != 0:
        print(out.stderr[-2000:])
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


REAL_TABLES = ("digits", "titanic", "fair", "seattle_weather", "anes96", "modechoice")


def _real_table(name):
    """(frame or array, name) of a real table: sklearn's digits or one of mixed_tables.py's."""
    if name == "digits":
        from sklearn.datasets import load_digits

        return load_digits().data.astype(np.float64)
    import mixed_tables

    return mixed_tables.load(name)[0]


def real_tables(tables, threads=2, score_rows=10**4, turns=3, training_samples=None):
    """score_samples and predict on real tables at the defaults, by turns with a 4096^3 matmul.

    Each table is fitted at the defaults (random_state=0, handle_missing='model');
    its rows are replicated to ``score_rows``. ``training_samples`` (default:
    the estimator's) sets the training loss, 1 for the ELBO. In turns: the matmul,
    score_samples (search on), score_samples with the search off, predict
    (sequential decisions). Medians of ``turns`` turns.
    """
    import pandas as pd

    from vaefilter import VAEOutlierDetector

    torch.set_num_threads(threads)
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    out = []
    for name in tables:
        data = _real_table(name)
        loss = {} if training_samples is None else {"training_samples": training_samples}
        det = VAEOutlierDetector(random_state=0, handle_missing="model", device="cpu", **loss)
        t0 = time.perf_counter()
        det.fit(data)
        fit_s = time.perf_counter() - t0
        reps = int(np.ceil(score_rows / len(data)))
        if isinstance(data, pd.DataFrame):
            rows = pd.concat([data] * reps, ignore_index=True).iloc[:score_rows]
        else:
            rows = np.tile(data, (reps, 1))[:score_rows]
        X_model = det._validate_for_scoring(rows)
        searched = float(det._log_marginal(X_model[: len(data)]).searched.mean())
        decided = det._decide(X_model[: len(data)])
        no_search = VAEOutlierDetector(**{**det.get_params(), "posterior_search_steps": 0})
        no_search.__dict__.update({k: v for k, v in det.__dict__.items() if k.endswith("_")})
        # the same model scoring in one thread (torch's intra-op threads only), as before n_jobs
        one_thread = copy.deepcopy(det).set_params(n_jobs=1)
        det.score_samples(rows[:256])
        times = {k: [] for k in ("matmul", "score", "no_search", "predict", "score_1", "predict_1")}
        for _ in range(turns):
            for key, run in (("matmul", lambda: a @ b), ("score", lambda: det.score_samples(rows)),
                             ("no_search", lambda: no_search.score_samples(rows)), ("predict", lambda: det.predict(rows)),
                             ("score_1", lambda: one_thread.score_samples(rows)),
                             ("predict_1", lambda: one_thread.predict(rows))):
                t0 = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - t0)
        t = {k: float(np.median(v)) for k, v in times.items()}
        matmul_gflops = 2 * 4096**3 / t["matmul"] / 1e9
        d_model = X_model.shape[1]
        flops = scoring_flops_per_row(d_model, det.n_importance_samples)
        score_gflops = flops * score_rows / t["score"] / 1e9
        out.append(dict(table=name, features=d_model, fit_s=fit_s, searched=searched,
                        searched_decide=float(decided.searched.mean()), draws=float(decided.n_draws.mean()),
                        score_rows_s=score_rows / t["score"], no_search_rows_s=score_rows / t["no_search"],
                        predict_rows_s=score_rows / t["predict"], matmul=matmul_gflops,
                        score_1_rows_s=score_rows / t["score_1"], predict_1_rows_s=score_rows / t["predict_1"],
                        of_matmul=score_gflops / matmul_gflops, search_cost=t["score"] / t["no_search"],
                        load=os.getloadavg()[0]))
        print(out[-1], flush=True)
    return out


def real_markdown(rows, command, elapsed, threads):
    load = os.getloadavg()
    lines = [
        f"Run: `{command}` — {elapsed:.0f} s; torch threads {threads}; load average at the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (2 cores shared with other jobs). Rates are medians "
        "of 3 turns of (4096³ matmul, score_samples, score_samples without the search, predict, and both "
        "again in one thread, `n_jobs=1`) on 10⁴ rows.",
        "",
        "| table | model columns | rows searched (score_samples) | score_samples rows/s | without search rows/s | "
        "search cost × | % of 4096³ matmul | predict rows/s | draws/row in predict | searched in predict | "
        "score_samples rows/s, n_jobs=1 | predict rows/s, n_jobs=1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['table']} | {r['features']} | {r['searched']:.1%} | {r['score_rows_s']:,.0f} | "
                     f"{r['no_search_rows_s']:,.0f} | {r['search_cost']:.2f} | {r['of_matmul']:.0%} | "
                     f"{r['predict_rows_s']:,.0f} | {r['draws']:.1f} | {r['searched_decide']:.1%} | "
                     f"{r['score_1_rows_s']:,.0f} | {r['predict_1_rows_s']:,.0f} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 epochs, 1e5 rows only at 30 features, PyOD at 1e4 only")
    p.add_argument("--single", nargs=4, metavar=("N", "D", "EPOCHS", "THREADS"), help=argparse.SUPPRESS)
    p.add_argument("--pyod", nargs=3, metavar=("N", "D", "THREADS"), help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads for the grid (default: torch's default, the core count)")
    p.add_argument("--real", nargs="*", metavar="TABLE",
                   help=f"instead: real tables at the defaults, 2 threads (default all: {REAL_TABLES})")
    p.add_argument("--omp-spin", action="store_true",
                   help="load torch before vaefilter: OpenMP's default wait policy, not the CLI's PASSIVE")
    p.add_argument("--training-samples", type=int, default=None, metavar="K",
                   help="with --real: fit with this training loss (1: the ELBO) instead of the default")
    args = p.parse_args()
    if args.real is not None:
        t0 = time.perf_counter()
        threads = args.threads or 2
        rows = real_tables(args.real or REAL_TABLES, threads=threads, training_samples=args.training_samples)
        loss = "" if args.training_samples is None else f" --training-samples {args.training_samples}"
        loss += " --omp-spin" if args.omp_spin else ""
        command = (f"python benchmarks/bench_speed.py --threads {threads}{loss} --real " + " ".join(args.real)).strip()
        print(real_markdown(rows, command, time.perf_counter() - t0, threads))
        return
    if args.single:
        n, d, e, th = map(int, args.single)
        print(json.dumps(single(n, d, e, th)))
        return
    if args.pyod:
        n, d, th = map(int, args.pyod)
        print(json.dumps(pyod_epoch(n, d, th)))
        return

    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    grid_threads = args.threads or threads
    mm_big = matmul_rate(4096, 4096, 4096, repeats=3)
    def rates(n_threads):
        torch.set_num_threads(n_threads)
        pass_rows = 8192 * n_threads  # draws per scoring pass at the defaults (vaefilter.scoring.marginal)
        return (matmul_rate(4096, 4096, 4096, repeats=3), matmul_rate(pass_rows, 128, 128),
                matmul_rate(pass_rows, 8, 128), pass_rows)

    # the grid's own thread count is the physical limit its scoring is compared with
    mm_big, mm_score, mm_score_small, pass_rows = rates(grid_threads)
    mm_big_1, mm_score_1, _, _ = rates(1)
    torch.set_num_threads(threads)
    print(f"matmul GFLOP/s: 4096^3 {mm_big:.1f} ({grid_threads} threads), {mm_big_1:.1f} (1 thread); "
          f"{pass_rows}x128@128x128 {mm_score:.1f} / {mm_score_1:.1f}", flush=True)

    # the full grid fits at the library defaults, to convergence; --quick for a fixed 2 epochs
    grid_epochs = 2 if args.quick else 0
    epochs = 2 if args.quick else 3
    grid = [(10**4, d) for d in (10, 30, 200)] + [(10**5, d) for d in ((30,) if args.quick else (10, 30, 200))]
    rows = []
    for n, d in grid:
        r = subprocess_json(["--single", str(n), str(d), str(grid_epochs), str(grid_threads)])
        if r:
            rows.append(r)
            print(r, flush=True)
    thread_rows = []
    for th in (1, 2):
        r = subprocess_json(["--single", "10000", "30", str(epochs), str(th)])
        if r:
            thread_rows.append(r)
            print(r, flush=True)
    default_fit = None
    if not args.quick:
        default_fit = subprocess_json(["--single", "100000", "30", "0", "1"])
        print("default fit 1e5x30 (1 thread):", default_fit, flush=True)
    pyod_rows = []
    try:
        import pyod  # noqa: F401

        for n, d in ((10**4, 30),) if args.quick else ((10**4, 30), (10**5, 30)):
            r = subprocess_json(["--pyod", str(n), str(d), str(grid_threads)])
            if r:
                pyod_rows.append(r)
                print("pyod", r, flush=True)
    except ImportError:
        print("pyod not installed: skipped")

    # ------------------------------------------------------------ report
    table = md_table(
        ["rows", "features", "epochs (best)", "fit (s)", "s/epoch", "proposal refit (s)",
         f"score rows/s (K={K_DEFAULT})", "rows searched", "score rows/s without search", "scoring GFLOP/s",
         "4096^3 matmul GFLOP/s, by turns", "% of it", "% of scoring-shape matmul", "page faults per 1e4 rows",
         "est. 1e6 rows scoring (s)", "peak RSS (MB)"],
        [[f"{r['n']:.0e}", r["d"], f"{r['epochs']} ({r['best_epoch']})", f"{r['fit_s']:.0f}", f"{r['s_per_epoch']:.2f}",
          f"{r['refit_s']:.1f}", f"{r['score_rows_per_s']:.0f}", f"{100 * r['searched']:.1f}%",
          f"{r['score_rows_per_s_no_search']:.0f}", f"{r['gflops_scoring']:.1f}", f"{r['matmul_gflops']:.0f}",
          f"**{100 * r['gflops_scoring'] / r['matmul_gflops']:.0f}%**", f"{100 * r['gflops_scoring'] / mm_score:.0f}%",
          f"{r['page_faults']:,}", f"{1e6 / r['score_rows_per_s']:.0f}", f"{r['maxrss_mb']:.0f}"] for r in rows])
    th_table = md_table(
        ["torch threads", "s/epoch (1e4 x 30)", "score rows/s (1e4 x 30)"],
        [[r["threads"], f"{r['s_per_epoch']:.3f}", f"{r['score_rows_per_s']:.0f}"] for r in thread_rows])
    text = f"""## Speed (bench_speed)

Run: `python benchmarks/bench_speed.py{' --quick' if args.quick else ''}{f' --threads {args.threads}' if args.threads else ''}`, wall time {time.perf_counter() - t_start:.0f} s.  
{machine_line()}
The machine is shared with other engineers' test runs, so timings carry noise (tens of %).

**Dense float32 matmul rate (torch)**: 4096x4096 @ 4096x4096: **{mm_big:.1f} GFLOP/s** with {grid_threads}
thread(s), {mm_big_1:.1f} GFLOP/s with 1 thread; the scoring shape, one pass of the decoder's hidden
layer ({pass_rows} x 128) @ (128 x 128): **{mm_score:.1f} GFLOP/s** ({mm_score_1:.1f} with 1 thread at
8192 x 128); its first layer ({pass_rows} x 8) @ (8 x 128): {mm_score_small:.1f} GFLOP/s.

**vaefilter, defaults (hidden (128,128), latent 8, K={K_DEFAULT}, batch 128)**, {grid_threads} torch thread(s).
Fit: {'a fixed 2 epochs, early stopping off' if args.quick else 'the library defaults, to early stopping, then the proposal refit'};
s/epoch is the training loop alone (each epoch includes its validation loss), without the
refit and the band's scoring. Scoring: {SCORE_ROWS} fresh rows from the training distribution,
best of 5 runs at the defaults, which include the posterior search for the rows whose encoder
mean looks misplaced ("rows searched"; `posterior_search_steps=0` for the column beside it).
Each scoring run takes turns with a 4096^3 matmul, and the "% of it" column divides by that
turns' best rate: on this shared machine both then see the same load. Scoring FLOPs per
row = 2*sum(in*out) over the encoder once + the decoder K times (e.g. d=30:
{scoring_flops_per_row(30, K_DEFAULT) / 1e6:.2f} MFLOP/row), not counting the search's own work;
the scoring-shape % divides by the rate in the header. Page faults: minor faults of one scoring
run (see vaefilter/heap.py). 1e6-row scoring is extrapolated, not run.

{table}

**Threads** (same 1e4 x 30 configuration):

{th_table}
"""
    if default_fit:
        text += (f"\n**Core figure: 1e5 x 30 fit at library defaults** (1 torch thread): "
                 f"**{default_fit['fit_s']:.0f} s**, {default_fit['epochs']} epochs (best epoch {default_fit['best_epoch']}), "
                 f"{default_fit['s_per_epoch']:.2f} s/epoch; scoring **{default_fit['score_rows_per_s']:.0f} rows/s** at K=100.\n")
    else:
        r = [r for r in rows if r["n"] == 10**5 and r["d"] == 30]
        if r:
            r = r[0]
            text += (f"\n**Core figure: 1e5 x 30**: {r['s_per_epoch']:.2f} s/epoch, so the default max_epochs=200 costs up to "
                     f"~{200 * r['s_per_epoch']:.0f} s (early stopping usually ends sooner; the full run measures it); "
                     f"scoring **{r['score_rows_per_s']:.0f} rows/s** at K=100.\n")
    if pyod_rows:
        text += "\n**PyOD VAE, same architecture** (encoder/decoder [128,128], latent 8, batch 128, dropout 0):\n\n"
        text += md_table(["rows", "features", "s/epoch", "score rows/s (1 pass)"],
                            [[f"{r['n']:.0e}", r["d"], f"{r['s_per_epoch']:.2f}", f"{r['score_rows_per_s']:.0f}"] for r in pyod_rows])
        text += "\n"
    print(text)
    write_section("bench_speed", text)


if __name__ == "__main__":
    main()
