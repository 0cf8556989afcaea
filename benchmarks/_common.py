"""What every benchmark part shares: measured child runs, timing, agreement, result rows, the machine.

A part returns a list of :class:`Row` (one line of the printed table: our figure, the reference
measured in the same run, their ratio, the label agreement and the issue's target when there is
one) and may add raw series to the JSON (the growth curves).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


@dataclass
class Config:
    """Settings shared by the parts (see ``run_benchmarks.py --help``)."""

    out: Path
    quick: bool = False
    tiny: bool = False  # smoke test: the smallest inputs that still run every step
    repeats: int = 3
    bundle: Path | None = None
    ct: Path | None = None
    n_radiographs: int = 500
    threads: int | None = None
    device: str = "cpu"
    log: Callable[[str], None] = print


@dataclass
class Row:
    """One line of the result table."""

    part: str
    case: str
    ours: str
    ours_value: float | None
    reference: str = ""
    ref_value: float | None = None
    unit: str = "s"
    agreement: float | None = None  # Dice of our labels against the reference's
    target: str = ""
    met: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """ours / reference (below 1: we take less time or memory; above 1 for throughput: more)."""
        if self.ours_value is None or self.ref_value in (None, 0):
            return None
        return float(self.ours_value) / float(self.ref_value)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio
        return d


# ---------------------------------------------------------------------------- child runs
def python_env(threads: int | None = None) -> dict[str, str]:
    """The environment of every measured child (same threads, no warnings noise)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", TQDM_DISABLE="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def measure(cmd: Sequence[str], env: dict[str, str] | None = None, cwd: str | Path | None = None,
            timeout: float = 3600.0) -> dict[str, Any]:
    """Run ``cmd`` from the small stdlib parent ``_peak.py``: seconds, peak RSS (MB), exit status.

    Raises
    ------
    RuntimeError
        When the command fails (with the end of its output).
    """
    fd, report = tempfile.mkstemp(suffix=".json", prefix="peak.")
    os.close(fd)
    try:
        res = subprocess.run([sys.executable, str(HERE / "_peak.py"), report, "--", *map(str, cmd)],
                             capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
        info = json.loads(Path(report).read_text() or "{}")
    finally:
        Path(report).unlink(missing_ok=True)
    if res.returncode != 0 or info.get("rc") != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} ... failed (rc {info.get('rc')}):\n"
                           f"{res.stdout[-1500:]}\n{res.stderr[-2500:]}")
    info["stdout"] = res.stdout
    return info


def alternate(runs: dict[str, Callable[[], dict[str, Any]]], repeats: int) -> dict[str, list[dict[str, Any]]]:
    """Call each run ``repeats`` times, interleaved (A B C A B C ...), so drifts in machine load hit all alike."""
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in runs}
    for _ in range(max(1, repeats)):
        for k, fn in runs.items():
            out[k].append(fn())
    return out


def median_of(results: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in results))


def time_call(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, Any]:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones; and the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(statistics.median(times)), out


# ---------------------------------------------------------------------------- agreement
def dice_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Dice over the classes (ids > 0) present in either label array; 1.0 when both are empty."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"label arrays of different shapes {a.shape} and {b.shape}")
    ids = sorted((set(np.unique(a).tolist()) | set(np.unique(b).tolist())) - {0})
    if not ids:
        return 1.0
    scores = []
    for i in ids:
        ma, mb = a == i, b == i
        scores.append(2.0 * np.logical_and(ma, mb).sum() / max(1, int(ma.sum()) + int(mb.sum())))
    return float(np.mean(scores))


# ---------------------------------------------------------------------------- the machine
def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, versions and what else was running (a busy machine is said)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    busy = []
    try:
        ps = subprocess.run(["ps", "-eo", "pid,pcpu,args"], capture_output=True, text=True, timeout=10).stdout
        me = os.getpid()
        for line in ps.splitlines()[1:]:
            parts = line.split(None, 2)
            if len(parts) == 3 and float(parts[1]) > 20.0 and int(parts[0]) != me:
                busy.append(f"{parts[2][:80]} ({parts[1]}% CPU)")
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "memory_gb": mem_gb, "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg": list(os.getloadavg()), "busy_processes": busy,
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def save_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    return path


def child_main(command: str, n_args: int, fn: Callable[..., Any]) -> None:
    """Entry point of a benchmark module run as a measured child: ``python bench_x.py COMMAND ARGS...``."""
    if len(sys.argv) == n_args + 2 and sys.argv[1] == command:
        import warnings

        warnings.filterwarnings("ignore")
        fn(*sys.argv[2:])
    else:
        print("run through benchmarks/run_benchmarks.py", file=sys.stderr)
        sys.exit(2)
