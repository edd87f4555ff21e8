"""The ``vaefilter`` console script and ``python -m vaefilter``: Ctrl-C while the tool loads ends it quietly.

Loading :mod:`vaefilter.cli` imports torch, which takes seconds; an interrupt
then printed a KeyboardInterrupt traceback of torch's import, before the
CLI's own handlers existed. This module imports nothing heavy itself (the
package's ``__init__`` loads the estimator on first use), so it can catch it.
"""

from __future__ import annotations

import sys

INTERRUPTED = 130  # 128 + SIGINT, as the CLI returns after Ctrl-C


def main(argv=None):
    """Load the CLI and run it; 130 if interrupted while loading (nothing was written yet)."""
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        print("vaefilter: interrupted while starting; nothing was written", file=sys.stderr)
        return INTERRUPTED
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
