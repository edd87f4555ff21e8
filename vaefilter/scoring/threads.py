"""Scoring one batch of rows in several threads, a contiguous slice of the rows each.

Why threads of one torch thread each, rather than torch's own threads: on the
CPU scoring is thousands of small ops (a decoder pass, then the likelihood's
element-wise work per column family), and torch's intra-op threads barely
split them. Sequential decisions on 30,000 titanic rows took 0.71 s with 2
torch threads and 0.69 s with 1; two Python threads of one torch thread each,
15,000 rows apiece, took 0.47 s (modechoice at the default band: 8.4 s, 8.4 s
and 6.1 s; 2-core AMD EPYC). The ops release the GIL, so the threads' arithmetic
overlaps; their Python-level work does not, which caps the gain below 2x.

A row's score is a function of that row alone (draws keyed by its bytes, a
search decided by its own values, passes of a fixed shape; see
:mod:`vaefilter.scoring.marginal`), so slicing the rows changes a score no
more than scoring it in another batch does: the caller sizes the passes
(``activation_floats``) before the slices are cut, and every slice scores in
passes of that shape. Measured on four tables of 20,000 rows: score_samples
the same floats; sequential decisions the same decisions and draws, and on
penguins one log p(x) 1e-7 relative apart, as far as it moves when the other
half of the rows is not scored beside it. The per-column expectations behind
``explain``'s deficits move in their last float32 bits with the number of
torch threads anyway (1 against 2), and so with the slices.
"""

from __future__ import annotations

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
MIN_ROWS_PER_THREAD = 1000
# Sequential decisions pay more per call: each slice runs its own rounds and
# its own posterior search, a few dozen small steps whatever the rows. predict
# at (1, None), two threads against one: titanic 2 x 2,048 rows 292 -> 367 ms,
# 2 x 4,096 395 -> 414, 2 x 8,192 615 -> 538; modechoice 2 x 2,048 391 -> 365,
# 2 x 4,096 600 -> 465. At (25, 75), 2 x 2,048 already gained (titanic 623 ->
# 556 ms, modechoice 1,144 -> 690).
MIN_ROWS_PER_DECIDING_THREAD = 4096


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


def map_row_slices(score, n_rows, n_threads):
    """``[score(start, stop), ...]`` over ``n_threads`` contiguous slices of ``range(n_rows)``, in row order.

    With one thread ``score`` runs in the caller, as it always did. With more,
    each runs in its own thread with one torch thread; the caller's torch
    thread count (which new threads inherit) is restored afterwards. An error
    in any slice raises here, after every slice has ended.
    """
    if n_threads <= 1:
        return [score(0, n_rows)]
    bounds = np.linspace(0, n_rows, n_threads + 1).round().astype(int)
    slices = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
    caller_threads = torch.get_num_threads()

    def in_one_torch_thread(bounds_of_slice):
        torch.set_num_threads(1)
        return score(*bounds_of_slice)

    try:
        with ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="vaefilter-score") as pool:
            return list(pool.map(in_one_torch_thread, slices))
    finally:
        # set_num_threads writes the count new threads start from; the caller's own is its own
        torch.set_num_threads(caller_threads)
