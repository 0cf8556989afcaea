"""Run fuzz cases in child processes with bounded memory and time, and judge each outcome.

A child (``python fuzz_runner.py --child light|monai``) imports the readers, caps its own
address space (``RLIMIT_AS``) at what the imports took plus :data:`HEADROOM`, then reads one case
(a JSON line) at a time from stdin and answers one JSON line: the outcome, the message, seconds
and the peak resident memory of that case. One allocation bomb, hang or crash therefore costs
one case and a restart, never the pytest process. Two workers (threads, each owning a child)
share the cases; the worker whose child has MONAI (bundles, MSD tasks) takes those first.

Outcomes: ``ok`` (the reader returned sound objects), ``refused`` (a ``CxsegError`` naming the
file or folder) and the failures ``crash`` (another exception type), ``unnamed`` (a
``CxsegError`` naming neither), ``memory`` (``MemoryError`` anywhere in the chain, also when a
reader wrapped it), ``timeout``, ``died`` (the child was killed), ``bad-result`` (returned
objects that are not sound) and ``wrote`` (the input's folder or the cache changed, except for
complete bundle unpacks).
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

#: Address space a child may use beyond what its imports took.
HEADROOM = 3 << 29  # 1.5 GiB
#: The readers' own memory budget in the children (``CXSEG_MAX_INPUT_BYTES``).
INPUT_BUDGET = "256M"
#: Seconds one case may take in the child before it is stopped (then ``timeout``); the slowest
#: input takes about 1 s of CPU, so this only trips on a hang, even on a busy machine.
CASE_TIMEOUT_S = 20.0
#: Seconds the parent waits for an answer before it kills the child (a hang in C code).
WATCHDOG_S = 60.0
OUTCOMES_OK = ("ok", "refused")


# ------------------------------------------------------------------------------ parent side
class _Child:
    """One child process and a line reader on its stdout."""

    def __init__(self, mode: str, log: Path, env: dict[str, str]) -> None:
        self.mode = mode
        self.log = open(log, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", mode],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env,
        )
        self.buf = b""
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = self.read_line(WATCHDOG_S * 3)
        if ready is None:
            self.close()
            raise RuntimeError(f"fuzz child ({mode}) did not start; see {log}")
        self.as_limit = json.loads(ready)["as_limit"]

    def read_line(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sel.select(left):
                return None
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def ask(self, case: dict[str, Any]) -> dict[str, Any] | None:
        try:
            self.proc.stdin.write((json.dumps(case) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            return None
        line = self.read_line(WATCHDOG_S)
        return None if line is None else json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.sel.close()
        self.log.close()


def child_env(cache: Path) -> dict[str, str]:
    """The environment of a child: its cache, the readers' budget, one thread per library."""
    env = dict(os.environ)
    env.update(
        CXSEG_CACHE_DIR=str(cache), CXSEG_MAX_INPUT_BYTES=INPUT_BUDGET, PYTHONWARNINGS="ignore",
        OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
        MALLOC_ARENA_MAX="2",  # glibc reserves 64 MiB of address space per arena
    )
    src = str(Path(__file__).resolve().parent.parent / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_cases(cases: list[dict[str, Any]], cache: Path, log_dir: Path,
              workers: int = 2) -> dict[str, dict[str, Any]]:
    """Run every case; ``{case id: result}`` (see the module docstring for outcomes).

    Parameters
    ----------
    cases
        Case dicts (``fuzz_cases.Case.as_dict``); ``needs`` is ``"light"`` or ``"monai"``.
    cache
        Parent of the children's ``CXSEG_CACHE_DIR`` (``worker-<k>``; cases may name their own).
    log_dir
        Where the children's stderr goes (outside the cases' folders).
    workers
        Worker threads; the first one's child imports MONAI.
    """
    queues = {"monai": deque(c for c in cases if c["needs"] == "monai"),
              "light": deque(c for c in cases if c["needs"] != "monai")}
    lock = threading.Lock()
    results: dict[str, dict[str, Any]] = {}

    def take(order: tuple[str, ...]) -> dict[str, Any] | None:
        with lock:
            for q in order:
                if queues[q]:
                    return queues[q].popleft()
        return None

    def work(k: int) -> None:
        mode = "monai" if k == 0 and queues["monai"] else "light"
        order = ("monai", "light") if mode == "monai" else ("light",)
        env = child_env(cache / f"worker-{k}")  # its own: a case compares the cache before and after
        child: _Child | None = None
        try:
            while (case := take(order)) is not None:
                started = time.monotonic()
                if child is None:
                    try:
                        child = _Child(mode, log_dir / f"child-{k}.log", env)
                    except (RuntimeError, OSError) as e:  # the case is reported, the next tries again
                        with lock:
                            results[case["id"]] = {"id": case["id"], "outcome": "died", "message": str(e),
                                                   "seconds": time.monotonic() - started, "peak_kib": None}
                        continue
                res = child.ask(case)
                if res is None:  # killed (memory, a signal) or hung in C code
                    rc = child.proc.poll()
                    child.close()
                    child = None
                    msg = (f"no answer within {WATCHDOG_S:g} s: killed" if rc is None
                           else f"the child exited with status {rc} (negative: a signal)")
                    res = {"outcome": "timeout" if rc is None else "died", "message": msg,
                           "seconds": time.monotonic() - started, "peak_kib": None}
                res["id"] = case["id"]
                with lock:
                    results[case["id"]] = res
        finally:
            if child is not None:
                child.close()

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# ------------------------------------------------------------------------------ child side
def _vm_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, so the peak is this case's
    except OSError:
        pass


def _imports(mode: str) -> None:
    import highdicom  # noqa: F401
    import yaml  # noqa: F401
    from PIL import JpegImagePlugin, PngImagePlugin  # noqa: F401

    import napari_cxseg.io.dicom_radiograph  # noqa: F401
    import napari_cxseg.io.dicom_seg  # noqa: F401
    import napari_cxseg.io.dicom_series  # noqa: F401
    import napari_cxseg.io.msd  # noqa: F401
    import napari_cxseg.io.nifti  # noqa: F401
    import napari_cxseg.io.raster  # noqa: F401
    import napari_cxseg.models.card_schema  # noqa: F401
    import napari_cxseg.models.cards  # noqa: F401

    if mode == "monai":
        import monai.bundle
        import monai.data  # noqa: F401

        import napari_cxseg.models.bundle  # noqa: F401

        monai.bundle.ComponentLocator().get_component_module_name("UNet")  # its one-off scan


def child_main(mode: str) -> None:
    """Serve cases from stdin until it closes (see the module docstring)."""
    import resource
    import signal
    import warnings

    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # a print in a library must not corrupt the answers
    warnings.simplefilter("ignore")
    _imports(mode)
    from fuzz_judge import CaseTimeout, run_one

    limit = _vm_kib("VmSize") * 1024 + HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))

    def alarm(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"case ran past {CASE_TIMEOUT_S} s")

    signal.signal(signal.SIGALRM, alarm)
    out.write(json.dumps({"as_limit": limit}) + "\n")
    for line in sys.stdin:
        case = json.loads(line)
        _reset_peak()
        base = _vm_kib("VmRSS")
        t, cpu = time.perf_counter(), time.process_time()
        signal.setitimer(signal.ITIMER_REAL, CASE_TIMEOUT_S)
        try:
            res = run_one(case)
        except CaseTimeout as e:
            res = {"outcome": "timeout", "message": str(e)}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        res["seconds"] = time.perf_counter() - t
        res["cpu_seconds"] = time.process_time() - cpu  # what a busy machine does not inflate
        res["peak_kib"] = _vm_kib("VmHWM")
        res["growth_kib"] = res["peak_kib"] - base  # what the case itself took
        out.write(json.dumps(res) + "\n")


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    child_main(sys.argv[2])
