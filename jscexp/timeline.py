"""Timeline marks for ``make bench``: where a command's wall time goes (start-up, the sweep's
set-up, each job's preparation, its steps, its records, the sweep's close).

Each mark appends ``<what> <unix time>`` to the file $JSCEXP_STEP_MARKS names; without it,
nothing is written. Torch-free: the sweeper's process marks too.
"""

from __future__ import annotations

import os
import time

MARKS_ENV = "JSCEXP_STEP_MARKS"


def mark(what: str, when: float | None = None) -> None:
    """Appends ``what`` at ``when`` (now by default) when $JSCEXP_STEP_MARKS names a file."""
    if path := os.environ.get(MARKS_ENV):
        with open(path, "a") as f:
            f.write(f"{what} {time.time() if when is None else when:.6f}\n")
