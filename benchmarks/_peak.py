"""Run one command and report its wall time and peak memory as one JSON line (stdlib only).

Usage::

    python benchmarks/_peak.py REPORT.json -- COMMAND [ARGS...]

This small parent is what the benchmarks spawn for every measured run: ``ru_maxrss`` survives
``execve``, so a child forked from a process that already holds torch would report that
process's memory; forked from this one (a few MB) it reports its own. ``os.wait4`` gives the
child's resource usage (the maximum over it and the descendants it waited for).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: _peak.py REPORT.json -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    report, argv = argv[0], argv[2:]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    with open(report, "w", encoding="utf-8") as fh:
        json.dump({"rc": proc.returncode, "seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024.0,
                   "cpu_seconds": usage.ru_utime + usage.ru_stime}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
