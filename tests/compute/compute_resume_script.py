"""A build-like driver for the SIGKILL test: ``python compute_resume_script.py ROOT N SLEEP``."""

from __future__ import annotations

import sys

from compute_helpers import array_items

from causalvis.compute import run_items

if __name__ == "__main__":
    root, n_items, sleep = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    report = run_items(root, array_items(n_items, sleep=sleep), progress=False)
    print(report.summary())
