"""vaefilter on a CUDA GPU: fit and scoring speed against the card's matmul rate, and CPU/GPU agreement.

Needs a machine with a CUDA GPU (CI has none; this script exits with a message
where torch sees no GPU). It measures, in one run:

- the card's dense float32 matmul rate (torch, TF32 off, as vaefilter computes),
  for 8192^3 and for the shape of one scoring pass of the decoder's hidden layer;
- a fit of 1e5 x 30 at the library defaults on the GPU (seconds, epochs, s/epoch);
- score_samples throughput at the default K=100 for 1e5 rows x {10, 30, 200}
  features and for 1e6 x 30, with the fraction of the matmul rate it reaches;
- agreement of the same fitted model scored on the GPU and on the CPU
  (the per-row draws are counter-based, so the two differ only by rounding).

    python benchmarks/bench_gpu.py              # all of it (about 2.5 minutes on an H200)
    python benchmarks/bench_gpu.py --skip-fit   # scoring and agreement only
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from _common import md_table, write_section
from _common import K_DEFAULT, make_data, scoring_flops_per_row


def cuda_matmul_rate(m, k, n, repeats=10):
    a = torch.randn(m, k, device="cuda")
    b = torch.randn(k, n, device="cuda")
    for _ in range(3):
        a @ b
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    stop.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(stop) / 1e3 / repeats
    return 2 * m * k * n / seconds / 1e9


def timed(fn, repeats=3):
    best = np.inf
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-fit", action="store_true",
                        help="train 2 epochs instead of timing a fit at the defaults (scoring figures only)")
    skip_fit = parser.parse_args().skip_fit
    if not torch.cuda.is_available():
        print("bench_gpu: torch sees no CUDA GPU; nothing to measure here")
        return
    from vaefilter import VAEOutlierDetector
    from vaefilter.scoring.marginal import CUDA_ACTIVATION_FLOATS

    t_start = time.perf_counter()
    torch.backends.cuda.matmul.allow_tf32 = False
    name = torch.cuda.get_device_name()
    mm_big = cuda_matmul_rate(8192, 8192, 8192)
    pass_rows = CUDA_ACTIVATION_FLOATS // 128
    mm_pass = cuda_matmul_rate(pass_rows, 128, 128)
    print(f"{name}: fp32 matmul 8192^3 {mm_big:.0f} GFLOP/s, {pass_rows}x128@128x128 {mm_pass:.0f} GFLOP/s", flush=True)

    X = make_data(10**5, 30)
    if skip_fit:
        det = VAEOutlierDetector(random_state=0, device="cuda", max_epochs=2, n_iter_no_change=10**6,
                                 proposal_steps=0)
    else:
        det = VAEOutlierDetector(random_state=0, device="cuda")
    t0 = time.perf_counter()
    det.fit(X)
    torch.cuda.synchronize()
    fit_s = time.perf_counter() - t0
    print(f"fit 1e5x30 {'2 epochs' if skip_fit else 'defaults'}: {fit_s:.1f} s, {det.n_iter_} epochs", flush=True)

    # the same model on the CPU: same per-row draws, so only rounding differs
    rows = X[:2000]
    on_gpu = det.score_samples(rows)
    det.set_params(device="cpu")
    on_cpu = det.score_samples(rows)
    same_decision = float(np.mean(det.predict(rows) == det.set_params(device="cuda").predict(rows)))
    diff = np.abs(on_gpu - on_cpu)
    print(f"GPU vs CPU scores: max |diff| {diff.max():.2e}, mean {diff.mean():.2e}; same decision {same_decision:.4f}")

    score_rows = []
    for n, d in ((10**5, 10), (10**5, 30), (10**5, 200), (10**6, 30)):
        Xd = make_data(n, d, seed=1)
        model = det if d == 30 else VAEOutlierDetector(random_state=0, device="cuda", max_epochs=2,
                                                        n_iter_no_change=10**6, proposal_steps=0).fit(Xd[:20000])
        model.score_samples(Xd[:1000])  # warm-up
        seconds, _ = timed(lambda: model.score_samples(Xd))
        rate = n / seconds
        gflops = scoring_flops_per_row(d, K_DEFAULT) * rate / 1e9
        searched = model._log_marginal(Xd[:20000]).searched.mean()
        steps = model.posterior_search_steps
        plain_seconds, _ = timed(lambda: model.set_params(posterior_search_steps=0).score_samples(Xd))
        model.set_params(posterior_search_steps=steps)
        score_rows.append([f"{n:.0e}", d, f"{seconds:.2f}", f"{rate:,.0f}", f"{100 * searched:.0f}%",
                           f"{n / plain_seconds:,.0f}", f"{gflops:.0f}",
                           f"{100 * gflops / mm_big:.0f}%", f"{100 * gflops / mm_pass:.0f}%"])
        print(score_rows[-1], flush=True)

    table = md_table(["rows", "features", "score_samples (s)", f"rows/s (K={K_DEFAULT})",
                         "rows searched (of the first 20,000)", "rows/s without search", "scoring GFLOP/s",
                         "% of 8192^3 fp32 matmul", "% of pass-shape matmul"], score_rows)
    fit_text = ("**Fit**: not timed in this run (`--skip-fit`; the scoring model trained 2 epochs)." if skip_fit else
                f"**Fit, 1e5 x 30 at the library defaults** (device='cuda'): **{fit_s:.1f} s**, {det.n_iter_} epochs\n"
                f"(best epoch {det.best_epoch_}), proposal refit included.")
    text = f"""## GPU (bench_gpu)

Run: `python benchmarks/bench_gpu.py{' --skip-fit' if skip_fit else ''}`, wall time {time.perf_counter() - t_start:.0f} s, on a lent {name}
(torch {torch.__version__}, Python {platform.python_version()}); TF32 off, float32 throughout as on the CPU.

**Dense float32 matmul rate (torch)**: 8192^3 **{mm_big:,.0f} GFLOP/s**; one scoring pass's hidden layer
({pass_rows} x 128) @ (128 x 128): **{mm_pass:,.0f} GFLOP/s**.

{fit_text}

**Scoring** (score_samples at the defaults, K={K_DEFAULT} with the posterior search for rows whose encoder
mean looks misplaced, best of 3, host-to-device copies included; "without search" sets
`posterior_search_steps=0`; GFLOP/s counts the encoder once and the decoder K times per row, not the
search; 1e5 x 30 is the model above, the others trained 2 epochs):

{table}

**Same model on GPU and CPU** (2,000 rows, counter-based per-row draws, so only rounding differs;
the CPU runs the posterior search in float64, the GPU in float32):
max |log p(x) difference| {diff.max():.1e} nats, mean {diff.mean():.1e}; the same predict decision for
{100 * same_decision:.2f}% of rows.
"""
    print(text)
    write_section("bench_gpu", text)


if __name__ == "__main__":
    main()
