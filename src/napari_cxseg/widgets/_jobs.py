"""Run editing work off the GUI thread and write results back as one undo step.

A tool computes on a *copy* of the layer's array in a napari worker; the result is merged on
the main thread: only the voxels the tool changed are written, so strokes painted while it ran
survive, and the write is one :func:`apply_array` step (Ctrl+Z restores exactly).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, Signal

from ._layers import apply_array, notify_error, set_classes


@dataclass
class ToolResult:
    """What a tool computed: the new array, and new classes when it changed them."""

    array: np.ndarray
    classes: dict | None = None
    message: str = ""


def start_worker(
    fn: Callable[..., Any],
    *args: Any,
    on_done: Callable[[Any], None],
    on_error: Callable[[BaseException], None],
    on_finished: Callable[[], None] | None = None,
) -> Any:
    """Run ``fn(*args)`` in a napari thread worker (:func:`create_job`); callbacks arrive on the
    main thread."""
    worker = create_job(fn, *args, _ignore_errors=True)
    worker.returned.connect(on_done)
    worker.errored.connect(on_error)
    if on_finished is not None:
        worker.finished.connect(on_finished)
    worker.start()
    return worker


def create_job(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """napari's ``create_worker`` for ``fn(*args)`` (a function or a generator function), whose
    body first waits for the background warm-ups: their imports must not race with the job's
    (two threads importing MONAI at once see it half initialised).

    Parameters
    ----------
    fn, args
        The job and its arguments.
    kwargs
        ``create_worker``'s own options (``_ignore_errors``, ``_progress`` ...).

    Returns
    -------
    napari.qt.threading.WorkerBase
        Not started.
    """
    from napari.qt.threading import create_worker

    from ..warmup import wait_for_warm_ups

    if inspect.isgeneratorfunction(fn):
        def body(*a: Any) -> Any:
            wait_for_warm_ups()
            return (yield from fn(*a))
    else:
        def body(*a: Any) -> Any:
            wait_for_warm_ups()
            return fn(*a)
    return create_worker(body, *args, **kwargs)


class LatestOnly(QObject):
    """Runs one job at a time; a job submitted while one runs replaces any waiting job.

    Live previews use it: dragging a slider queues many requests but only the newest is
    computed once the current one is done.
    """

    #: emitted with the error of a failed job
    failed = Signal(object)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._worker = None
        self._pending: tuple | None = None

    @property
    def busy(self) -> bool:
        """Whether a job is running."""
        return self._worker is not None

    def submit(self, fn: Callable[..., Any], *args: Any, on_done: Callable[[Any], None]) -> None:
        """Run ``fn(*args)`` now, or after the running job (replacing any waiting job)."""
        if self._worker is not None:
            self._pending = (fn, args, on_done)
            return
        self._worker = start_worker(
            fn, *args, on_done=on_done, on_error=self.failed.emit, on_finished=self._next
        )

    def cancel_pending(self) -> None:
        """Forget the waiting job (the running one still finishes)."""
        self._pending = None

    def _next(self) -> None:
        self._worker = None
        if self._pending is not None:
            fn, args, on_done = self._pending
            self._pending = None
            self.submit(fn, *args, on_done=on_done)


class LayerEditRunner(QObject):
    """Runs one editing tool at a time on a Labels layer and applies its result."""

    #: ``(tool, voxels changed)`` after a result was written to the layer
    applied = Signal(str, int)
    #: the message of a failure (also shown as a napari notification)
    failed = Signal(str)
    #: a line for the widget's status text
    message = Signal(str)

    def __init__(self, viewer: Any, parent: QObject | None = None):
        super().__init__(parent)
        self.viewer = viewer
        self._worker = None
        self._job: dict[str, Any] = {}

    @property
    def busy(self) -> bool:
        """Whether a tool is running."""
        return self._worker is not None

    def run(
        self,
        layer: Any,
        tool: str,
        compute: Callable[[np.ndarray], ToolResult | np.ndarray],
        on_applied: Callable[[ToolResult], None] | None = None,
    ) -> bool:
        """Compute ``compute(copy_of_layer_data)`` in a worker, then write the result.

        Returns
        -------
        bool
            False when another tool is still running (nothing was started).
        """
        if self._worker is not None:
            self.message.emit(f"{self._job.get('tool')} is still running; try again when it ends.")
            return False
        before = np.array(layer.data, copy=True)
        self._job = {
            "layer": layer,
            "tool": tool,
            "before": before,
            "t0": time.perf_counter(),
            "on_applied": on_applied,
        }
        self.message.emit(f"{tool} on '{layer.name}'...")
        self._worker = start_worker(
            compute,
            before,
            on_done=self._on_done,
            on_error=self._on_error,
            on_finished=self._on_finished,
        )
        return True

    def _on_done(self, result: ToolResult | np.ndarray) -> None:
        job = self._job
        layer, tool = job["layer"], job["tool"]
        if not isinstance(result, ToolResult):
            result = ToolResult(np.asarray(result))
        try:
            if layer not in self.viewer.layers:
                raise RuntimeError("the layer was closed while the tool ran; nothing was written")
            n = merge_into_layer(layer, job["before"], result.array)
            if result.classes is not None:
                set_classes(layer, result.classes)
        except Exception as exc:
            self._on_error(exc)
            return
        secs = time.perf_counter() - job["t0"]
        text = result.message or f"{tool}: {n} voxels changed"
        self.message.emit(f"{text} ({secs:.2f} s). Ctrl+Z undoes it.")
        if job.get("on_applied") is not None:
            job["on_applied"](result)
        self.applied.emit(tool, n)

    def _on_error(self, exc: BaseException) -> None:
        job = self._job
        name = getattr(job.get("layer"), "name", "?")
        context = f"{job.get('tool', 'Tool')} on '{name}'"
        notify_error(exc, context)
        self.message.emit(f"{context} failed: {exc}")
        self.failed.emit(f"{context}: {exc}")

    def _on_finished(self) -> None:
        self._worker = None


def merge_into_layer(layer: Any, before: np.ndarray, result: np.ndarray) -> int:
    """Write the voxels where ``result`` differs from ``before`` into ``layer`` (one undo step).

    Returns
    -------
    int
        Number of voxels that changed in the layer.
    """
    result = np.asarray(result)
    if result.shape != before.shape:
        raise ValueError(f"result shape {result.shape} differs from the layer's {before.shape}")
    changed = result != before
    if not changed.any():
        return 0
    dtype = np.asarray(layer.data).dtype
    top = int(result[changed].max())
    if np.issubdtype(dtype, np.integer) and top > np.iinfo(dtype).max:
        raise ValueError(f"class id {top} does not fit the layer's {dtype} data")
    new = np.array(layer.data, copy=True)
    if new.shape != before.shape:
        raise RuntimeError("the layer's shape changed while the tool ran; nothing was written")
    new[changed] = result[changed]
    return apply_array(layer, new)
