"""Scoring one batch of rows in several threads, a contiguous slice of the rows each.

Why threads of one torch thread each, rather than torch's own threads: on the
CPU scoring is thousands of small ops (a decoder pass, then the likelihood's
element-wise work per column family), and torch's intra-op threads barely
split them. Sequential decisions on 30,000 titanic rows took 0.71 s with 2
torch threads and 0.69 s with 1; two Python threads of one torch thread each,
15,000 rows apiece, took 0.47 s (modechoice at the default band: 8.4 s, 8.4 s
and 6.1 s; 2-core Intel Xeon, under vaefilter's OMP_WAIT_POLICY=PASSIVE: with
spinning OpenMP threads one thread is about as fast, see benchmarks/RESULTS.md threads_round11). The ops release the GIL, so the threads' arithmetic
overlaps; their Python-level work does not, which caps the gain below 2x.

A row's score is a function of that row alone (draws keyed by its bytes, a
search decided by its own values, passes of a fixed shape; see
:mod:`vaefilter.scoring.marginal`), so slicing the rows changes a score no
more than scoring it in another batch does: float32 rounding, as BLAS picks
its kernels by the passes' shape (on 2 cores the threads' passes have one
call's shape: score_samples of four tables of 20,000 rows gave the same floats).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from joblib import effective_n_jobs

# Fewest rows a thread gets: below it the threads' fixed costs (per call and
# per pass, mostly Python under the GIL, which threads do not overlap) are not
# repaid. Scoring at K draws per row, two threads against one (default fits, 2
# cores, medians of 5): 2,000 rows in two slices of 1,000, score_samples 491 ->
# 455 ms on titanic, 603 -> 464 modechoice, 242 -> 177 seattle_weather, 392 ->
# 324 penguins (the filter's 2,000-row drift sample alike, 7-33% faster); 1,024
# rows in two slices of 512 lost on titanic (256 -> 288 ms).
# Checked afterwards on two tables not used to choose it (fair, anes96):
# 2 x 1,000 rows 627 -> 581 and 440 -> 342 ms, 2 x 512 466 -> 466 and 272 -> 281.
MIN_ROWS_PER_THREAD = 1000
# Sequential decisions pay more per call: each slice runs its own rounds and
# its own posterior search, a few dozen small steps whatever the rows. predict
# at (1, None), two threads against one: titanic 2 x 2,048 rows 292 -> 367 ms,
# 2 x 4,096 395 -> 414, 2 x 8,192 615 -> 538; modechoice 2 x 2,048 391 -> 365,
# 2 x 4,096 600 -> 465. At (25, 75), 2 x 2,048 already gained (titanic 623 ->
# 556 ms, modechoice 1,144 -> 690).
# On fair and anes96 (not used to choose it), predict at (1, None): 2 x 2,048
# rows 418 -> 409 and 176 -> 177 ms, 2 x 4,096 550 -> 557 and 245 -> 221.
MIN_ROWS_PER_DECIDING_THREAD = 4096
# Each thread's pass budget: the caller's (2^20 floats per torch thread), at
# most 2^21 floats, the 2-thread budget the gains were measured at. Splitting
# the budget instead (2^20 a thread on 2 cores: the caller's memory exactly)
# made passes shorter and more numerous, and the threads' Python work per pass
# ate the gain: 20,000 rows, score_samples against one thread 1.25-1.44x on
# titanic and 1.11-1.22x on modechoice, against 1.72x and 1.88x. The cap bounds
# the memory of many threads: at most n_threads x 8 MB per hidden activation,
# not n_threads times a many-core machine's whole budget.
MAX_THREAD_PASS_FLOATS = 2**21


def scoring_threads(n_jobs, device, n_rows, min_rows=MIN_ROWS_PER_THREAD):
    """How many threads score ``n_rows`` rows: ``n_jobs`` (None: torch's thread count), each with at least
    ``min_rows`` rows.

    A GPU scores in one thread: its kernels are already parallel, and the
    host's threads would only queue launches on the same stream.
    """
    if torch.device(device).type != "cpu":
        return 1
    wanted = torch.get_num_threads() if n_jobs is None else effective_n_jobs(n_jobs)
    return int(max(1, min(wanted, n_rows // min_rows)))


# One threaded scoring at a time in a process: torch.set_num_threads also
# writes the count a thread takes when torch first sees it, so two at once
# (dask's threaded scheduler scoring partitions side by side) could each
# restore the other's 1 for every later thread. A call that finds another
# running scores in its own thread, as n_jobs=1 does.
_THREADED = threading.Lock()


def map_row_slices(score, n_rows, n_threads, activation_floats):
    """``[score(start, stop, floats), ...]`` over ``n_threads`` contiguous slices of ``range(n_rows)``, in row order.

    ``activation_floats`` is the caller's budget for one decoder pass (see
    :func:`vaefilter.scoring.marginal.activation_floats_for`); each thread
    gets it up to MAX_THREAD_PASS_FLOATS, ``floats``. With one thread
    ``score`` runs in the caller with the whole budget, as it always did.
    With more, each runs in its own thread with one torch thread; the caller's torch thread count
    (which new threads inherit) is restored afterwards. An error in any slice
    raises here, after every slice has ended; so does Ctrl-C, once the slices
    under way have ended.
    """
    if n_threads <= 1 or not _THREADED.acquire(blocking=False):
        return [score(0, n_rows, activation_floats)]
    try:
        bounds = np.linspace(0, n_rows, n_threads + 1).round().astype(int)
        slices = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
        share = min(activation_floats, MAX_THREAD_PASS_FLOATS)
        caller_threads = torch.get_num_threads()

        def in_one_torch_thread(bounds_of_slice):
            # torch sets a thread up on its first call; after it, nothing undoes the 1
            torch.get_num_threads()
            torch.set_num_threads(1)
            return score(*bounds_of_slice, share)

        try:
            with ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="vaefilter-score") as pool:
                return list(pool.map(in_one_torch_thread, slices))
        finally:
            # set_num_threads writes the count new threads start from; the caller's own is its own
            torch.set_num_threads(caller_threads)
    finally:
        _THREADED.release()
