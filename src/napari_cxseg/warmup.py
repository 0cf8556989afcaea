"""Warm-up: load what a first prediction or click needs before the user asks for it.

A first Segment press or click imports torch and MONAI (seconds) and builds a network. Python
holds the GIL through long stretches of that work (``dlopen`` of torch's shared libraries alone,
with their static initialisers, holds it for about 0.3 s), so a GUI thread waiting for the GIL
stalls, whichever thread does the importing. :func:`warm_up` does the work ahead of time in the
caller's thread, in small steps that each hand the GIL back soon: torch's shared libraries are
loaded through :mod:`ctypes` first (its ``dlopen`` runs without the GIL), then one module per
step, then the tasks (e.g. a click network's weights). :func:`start_warm_up` runs it in a
background thread. Each step runs once per process. No Qt and no napari here: the widgets add
their own modules and tasks.

Set ``CXSEG_WARMUP=0`` to switch the background warm-up off (the work then happens on first use).
"""

from __future__ import annotations

import ctypes
import glob
import importlib
import importlib.util
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

#: what a prediction imports on first use (``Predictor`` and the modules it loads lazily)
PREDICT_MODULES: tuple[str, ...] = (
    "torch",
    "monai",
    "monai.transforms",
    "monai.inferers",
    "monai.data",
    "napari_cxseg.device",
    "napari_cxseg.inference",
    "napari_cxseg.source_grid",
    "napari_cxseg.models.trust",
    "napari_cxseg.models.architectures",
    "napari_cxseg.models.networks",
)
#: what a click with a click backend imports on first use (besides torch, for the network)
CLICK_MODULES: tuple[str, ...] = (
    "torch",
    "napari_cxseg.editing.interactive",
    "napari_cxseg.models.guided",
)

Task = tuple[str, Callable[[], object]]

_lock = threading.Lock()
_claimed: set[str] = set()  # steps taken (running or done) in this process


@dataclass
class WarmStep:
    """One step of a warm-up: what it did, when it began (``time.perf_counter``), how long it
    took, in which thread, and any error."""

    name: str
    start: float
    seconds: float
    thread: str
    error: str = ""


@dataclass
class WarmUp:
    """A background warm-up: its thread, the steps done so far, and whether it has ended."""

    names: list[str]
    thread: threading.Thread | None = None
    steps: list[WarmStep] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0
    ended: float = 0.0

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the warm-up has ended; ``False`` on timeout."""
        return self.done.wait(timeout)


_runs: list[WarmUp] = []


def warmup_enabled() -> bool:
    """Whether background warm-ups run (``CXSEG_WARMUP``, default on)."""
    return os.environ.get("CXSEG_WARMUP", "1").strip().lower() not in ("0", "false", "no", "off")


def preload_torch_libraries() -> list[str]:
    """Load torch's shared libraries with :mod:`ctypes`, which releases the GIL while it loads.

    ``import torch`` then finds them loaded and only runs its Python-level initialisation. The
    libraries are loaded the way torch itself loads them (``libtorch_global_deps`` with
    ``RTLD_GLOBAL``, the ``torch._C`` extension like any extension module). Nothing happens when
    torch is imported already, is not installed, or is not a Linux build.

    Returns
    -------
    list of str
        The files loaded.
    """
    if "torch" in sys.modules or not sys.platform.startswith("linux"):
        return []
    if os.environ.get("TORCH_USE_RTLD_GLOBAL"):  # torch then loads _C itself with other flags
        return []
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    root = list(spec.submodule_search_locations)[0]
    files = [(os.path.join(root, "lib", "libtorch_global_deps.so"), ctypes.RTLD_GLOBAL)]
    files += [(p, ctypes.DEFAULT_MODE) for p in sorted(glob.glob(os.path.join(root, "_C.*.so")))]
    loaded = []
    for path, mode in files:
        if not os.path.isfile(path):
            continue
        try:
            ctypes.CDLL(path, mode=mode)
        except OSError:  # torch's own import reports what is wrong with it
            break
        loaded.append(path)
    return loaded


def _claim(names: Iterable[str]) -> list[str]:
    with _lock:
        new = [n for n in dict.fromkeys(names) if n not in _claimed]
        _claimed.update(new)
    return new


def _step(name: str, fn: Callable[[], object], steps: list[WarmStep]) -> None:
    t0 = time.perf_counter()
    error = ""
    try:
        fn()
    except Exception as exc:  # the first real use reports it with its context
        error = f"{type(exc).__name__}: {exc}"
    steps.append(WarmStep(name, t0, time.perf_counter() - t0, threading.current_thread().name, error))


def warm_up(modules: Iterable[str] = PREDICT_MODULES, tasks: Iterable[Task] = (),
            steps: list[WarmStep] | None = None, claimed: bool = False) -> list[WarmStep]:
    """Import ``modules`` one at a time, then run ``tasks``, in this thread.

    Parameters
    ----------
    modules
        Module names, in the order to import them. Steps taken before in this process are skipped.
    tasks
        ``(name, callable)`` pairs run after the imports (e.g. loading a network's weights).
    steps
        A list to append each step to as it ends (a running warm-up's record).
    claimed
        The steps were claimed already (by :func:`start_warm_up`).

    Returns
    -------
    list of WarmStep
        The steps run now; a step that failed holds its error and the others still run.
    """
    steps = [] if steps is None else steps
    tasks = dict(tasks)
    modules = list(modules)
    names = [f"import {m}" for m in modules] + list(tasks)
    todo = set(names if claimed else _claim(names))
    if "import torch" in todo:
        _step("load torch libraries", preload_torch_libraries, steps)
    for m in modules:
        if f"import {m}" in todo:
            _step(f"import {m}", lambda m=m: importlib.import_module(m), steps)
    for name, fn in tasks.items():
        if name in todo:
            _step(name, fn, steps)
    return steps


def start_warm_up(modules: Iterable[str] = PREDICT_MODULES, tasks: Iterable[Task] = (),
                  delay_s: float = 0.0) -> WarmUp | None:
    """Run :func:`warm_up` in a background thread, after ``delay_s`` seconds.

    Returns
    -------
    WarmUp or None
        The running warm-up; ``None`` when there is nothing left to warm up or warm-ups are off.
    """
    if not warmup_enabled():
        return None
    modules, tasks = list(modules), list(tasks)
    names = _claim([f"import {m}" for m in modules] + [name for name, _ in tasks])
    if not names:
        return None
    run = WarmUp(names=names)
    modules = [m for m in modules if f"import {m}" in names]
    tasks = [t for t in tasks if t[0] in names]

    def body() -> None:
        try:
            if delay_s > 0:
                time.sleep(delay_s)
            run.started = time.perf_counter()
            warm_up(modules, tasks, steps=run.steps, claimed=True)
        finally:
            run.ended = time.perf_counter()
            run.done.set()

    # not a daemon: an interpreter exiting in the middle of loading torch may crash
    run.thread = threading.Thread(target=body, name="cxseg-warm-up")
    with _lock:
        _runs.append(run)
    run.thread.start()
    return run


def warm_ups() -> list[WarmUp]:
    """The background warm-ups started in this process, oldest first."""
    with _lock:
        return list(_runs)


def wait_for_warm_ups(timeout: float | None = None) -> bool:
    """Wait until this process's background warm-ups have ended (a no-op inside one of them).

    Work that imports what a warm-up is importing must wait for it: two threads importing one
    package at once can see it half initialised (``cannot import name 'Compose' from partially
    initialized module 'monai.transforms'``). The imports have to happen anyway, so waiting costs
    nothing that starting later would save.

    Parameters
    ----------
    timeout
        Seconds to wait for each warm-up (None: as long as it takes).

    Returns
    -------
    bool
        False when a warm-up was still running at the timeout.
    """
    me = threading.current_thread()
    return all(run.thread is me or run.wait(timeout) for run in warm_ups())

