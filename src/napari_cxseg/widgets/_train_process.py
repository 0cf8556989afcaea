"""A ``napari-cxseg train`` run in a subprocess, followed through its ``--progress-json`` lines.

Training never runs in the viewer's process: a crash, an out-of-memory kill or a stuck CUDA
driver ends the subprocess, not napari. ``QProcess`` delivers the output through Qt signals
(no thread, no busy polling on the GUI thread); Cancel terminates the process (the Trainer's
checkpoint of the last finished epoch is written atomically, so it stays) and kills it if it
has not gone after a few seconds.
"""

from __future__ import annotations

import json
import os
import sys
from collections import deque
from typing import Any

from qtpy.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

#: Seconds between terminate and kill on Cancel.
KILL_AFTER_S = 5.0


def train_command(args: list[str]) -> list[str]:
    """``[python, -m, napari_cxseg.cli, train, *args, --progress-json]`` (the same Python as the viewer)."""
    return [sys.executable, "-m", "napari_cxseg.cli", "train", *args, "--progress-json"]


class TrainRun(QObject):
    """One training subprocess.

    Parameters
    ----------
    args
        Arguments after ``napari-cxseg train`` (``--data``, ``--out`` ...).
    threads
        torch CPU threads of the run (``OMP_NUM_THREADS``) unless the environment sets them;
        default: all cores but one, so the viewer stays responsive.
    """

    #: the ``start`` event (name, out, epochs, train and validation case keys)
    started_run = Signal(dict)
    #: one ``epoch`` event (epoch, loss, lr, dice when validated)
    epoch = Signal(dict)
    #: the ``done`` event (bundle, card, best_dice, per_class ...)
    done = Signal(dict)
    #: ``(exit code, outcome)`` with outcome ``finished``, ``cancelled`` or ``failed: <reason>``
    ended = Signal(int, str)

    def __init__(self, args: list[str], threads: int | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.args = list(args)
        self.history: list[dict[str, Any]] = []
        self.start_event: dict[str, Any] = {}
        self.done_event: dict[str, Any] = {}
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self._buf = b""
        self._cancelled = False
        self._ended = False
        self.proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        if not env.contains("OMP_NUM_THREADS"):
            env.insert("OMP_NUM_THREADS", str(threads or max(1, (os.cpu_count() or 2) - 1)))
        env.insert("PYTHONUNBUFFERED", "1")
        self.proc.setProcessEnvironment(env)
        self.proc.readyReadStandardOutput.connect(self._read_stdout)
        self.proc.readyReadStandardError.connect(self._read_stderr)
        self.proc.finished.connect(self._on_finished)
        self.proc.errorOccurred.connect(self._on_error)

    @property
    def running(self) -> bool:
        """Whether the subprocess is starting or running."""
        return self.proc.state() != QProcess.ProcessState.NotRunning

    def start(self) -> None:
        """Start the subprocess (returns at once)."""
        cmd = train_command(self.args)
        self.proc.start(cmd[0], cmd[1:])

    def cancel(self) -> None:
        """Stop the run: terminate now, kill after :data:`KILL_AFTER_S` seconds."""
        if not self.running:
            return
        self._cancelled = True
        self.proc.terminate()
        QTimer.singleShot(int(KILL_AFTER_S * 1000), self._kill_if_running)

    def wait(self, msecs: int = 30000) -> bool:
        """Block until the process ended (tests, viewer shutdown)."""
        return bool(self.proc.waitForFinished(msecs))

    # ------------------------------------------------------------------ output
    def _kill_if_running(self) -> None:
        if self.running:
            self.proc.kill()

    def _read_stdout(self) -> None:
        self._buf += bytes(self.proc.readAllStandardOutput())
        *lines, self._buf = self._buf.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("{"):
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            kind = ev.pop("event", "") if isinstance(ev, dict) else ""
            if kind == "start":
                self.start_event = ev
                self.started_run.emit(ev)
            elif kind == "epoch":
                self.history.append(ev)
                self.epoch.emit(ev)
            elif kind == "done":
                self.done_event = ev
                self.done.emit(ev)

    def _read_stderr(self) -> None:
        text = bytes(self.proc.readAllStandardError()).decode("utf-8", "replace")
        for line in text.replace("\r", "\n").splitlines():
            if line.strip():
                self.stderr_tail.append(line.rstrip())

    def reason(self) -> str:
        """The last error line the run printed (``napari-cxseg: error: ...``), else its last line."""
        lines = list(self.stderr_tail)
        for line in reversed(lines):
            if "error:" in line or "Error" in line:
                return line.split("error:", 1)[-1].strip() if "error:" in line else line.strip()
        return lines[-1].strip() if lines else "no output"

    def _on_finished(self, code: int, status: Any) -> None:
        self._read_stdout()
        self._read_stderr()
        if self._ended:
            return
        self._ended = True
        if self._cancelled:
            self.ended.emit(int(code), "cancelled")
        elif status == QProcess.ExitStatus.NormalExit and code == 0 and self.done_event:
            self.ended.emit(0, "finished")
        else:
            why = self.reason() if status == QProcess.ExitStatus.NormalExit else f"the training process crashed ({self.reason()})"
            self.ended.emit(int(code) if code else -1, f"failed: {why}")

    def _on_error(self, error: Any) -> None:
        if error == QProcess.ProcessError.FailedToStart and not self._ended:
            self._ended = True
            self.ended.emit(-1, f"failed: could not start {sys.executable} ({self.proc.errorString()})")
