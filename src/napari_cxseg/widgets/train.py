"""Train dock widget: train or fine-tune in a subprocess, build a training set, find the next case.

Three tabs share one run panel (live loss / validation-Dice plot, Cancel, Resume):

* **Train** - data (an MSD task, a CXLSeg dataset, images + masks, pairs, or the training set),
  a starting model (any card or bundle; none = a new network made for the data), network,
  epochs, device. The run is ``napari-cxseg train ... --progress-json`` in a subprocess
  (:mod:`._train_process`), written into a new version folder
  (:mod:`napari_cxseg.training.versions`); when it ends the CLI has registered the card and the
  Segment widget lists it at once (:func:`._train_models.model_events`).
* **Training set** - corrected Labels layers added to an MSD-layout folder, fine-tuning of the
  current model on it with the Dice before and after on held-out entries (:mod:`._train_set_tab`).
* **Next case** - unlabelled images ranked by the current model's uncertainty
  (:mod:`._train_next_tab`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ._layers import fill_combo, notify_error
from ._train_models import model_events
from ._train_plot import CurvePlot
from ._train_process import TrainRun

if TYPE_CHECKING:
    import napari

FROM_DATA = "(none: a new network for the data)"
DEVICES = ["auto", "cpu", "cuda", "mps"]


def card_names() -> list[str]:
    """Names of the cards the Segment widget lists (errors reported, never raised)."""
    from ..models.cards import list_cards

    errors: list[tuple[Path, str]] = []
    try:
        return [c.name for c in list_cards(errors)]
    except Exception as exc:  # a broken shipped card must not kill the widget
        notify_error(exc, "Reading model cards")
        return []


class TrainWidget(QWidget):
    """Train, fine-tune, collect corrected cases and pick the next case to correct."""

    #: ``(outcome, model name)`` when a run ended (``finished``, ``cancelled``, ``failed: ...``)
    run_ended = Signal(str, str)

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._run: TrainRun | None = None
        self._job: dict[str, Any] = {}

        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_train_tab(), "Train")
        from ._train_next_tab import NextCaseTab
        from ._train_set_tab import TrainingSetTab

        self.set_tab = TrainingSetTab(self)
        self.next_tab = NextCaseTab(self)
        self.tabs.addTab(self.set_tab, "Training set")
        self.tabs.addTab(self.next_tab, "Next case")

        self.run_status = QLabel("No training run.")
        self.run_status.setWordWrap(True)
        self.plot = CurvePlot()
        self.cancel_btn = QPushButton("Cancel")
        self.resume_btn = QPushButton("Resume")
        self.cancel_btn.setEnabled(False)
        self.resume_btn.setEnabled(False)
        self.result = QLabel("")
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QHBoxLayout()
        buttons.addWidget(self.cancel_btn)
        buttons.addWidget(self.resume_btn)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        layout.addWidget(self.run_status)
        layout.addWidget(self.plot)
        layout.addLayout(buttons)
        layout.addWidget(self.result)
        layout.addStretch(1)

        self.cancel_btn.clicked.connect(self.cancel_run)
        self.resume_btn.clicked.connect(self.resume_run)
        model_events().changed.connect(self._refresh_models)
        self._refresh_models()

    # ------------------------------------------------------------------ Train tab
    def _build_train_tab(self) -> QWidget:
        tab = QWidget()
        self.data_edit = QLineEdit()
        self.data_edit.setPlaceholderText("MSD task, CXLSeg dataset, images/ + masks/, pairs ...")
        browse = QPushButton("Browse...")
        use_set = QPushButton("Training set")
        use_set.setToolTip("Train on the training set of the 'Training set' tab")
        row = QHBoxLayout()
        row.addWidget(self.data_edit, 1)
        row.addWidget(browse)
        row.addWidget(use_set)
        self.start_combo = QComboBox()
        self.network_combo = QComboBox()
        from ..training.card_builder import NETWORK_DEFAULTS

        self.network_combo.addItems(list(NETWORK_DEFAULTS))
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("name of the new model (default: the data folder's name)")
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 10000)
        self.epochs_spin.setValue(50)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 256)
        self.batch_spin.setValue(4)
        self.size_edit = QLineEdit()
        self.size_edit.setPlaceholderText("default (2D 256 256, 3D 96 96 96)")
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.train_btn = QPushButton("Train")
        form = QFormLayout(tab)
        form.addRow("Data", row)
        form.addRow("Start from", self.start_combo)
        form.addRow("Network", self.network_combo)
        form.addRow("Name", self.name_edit)
        form.addRow("Epochs", self.epochs_spin)
        form.addRow("Batch", self.batch_spin)
        form.addRow("Input size / patch", self.size_edit)
        form.addRow("Device", self.device_combo)
        form.addRow(self.train_btn)
        browse.clicked.connect(self._browse_data)
        use_set.clicked.connect(lambda: self.data_edit.setText(str(self.set_tab.root())))
        self.start_combo.currentTextChanged.connect(
            lambda t: self.network_combo.setEnabled(t == FROM_DATA))
        self.train_btn.clicked.connect(self.train)
        return tab

    def _browse_data(self) -> None:  # pragma: no cover - needs a human
        path = QFileDialog.getExistingDirectory(self, "Training data folder")
        if path:
            self.data_edit.setText(path)

    def _refresh_models(self, *args: Any) -> None:
        names = card_names()
        fill_combo(self.start_combo, [FROM_DATA, *names], prefer=FROM_DATA)
        self.set_tab.refresh_models(names)
        self.next_tab.refresh_models(names)

    def train(self) -> bool:
        """Start a training run with the Train tab's settings (False when it could not start)."""
        from ..images import CxsegError
        from ..training.versions import check_name, next_version_dir

        data = self.data_edit.text().strip()
        if not data or not Path(data).expanduser().exists():
            self.fail(f"Training data {data or '(none)'}: choose an existing dataset folder.")
            return False
        try:
            name = check_name(self.name_edit.text() or Path(data).expanduser().resolve().name)
            size = [int(v) for v in self.size_edit.text().replace(",", " ").split()]
        except (CxsegError, ValueError) as exc:
            self.fail(f"Cannot train: {exc}")
            return False
        vdir = next_version_dir(name)
        args = ["--data", str(Path(data).expanduser()), "--out", str(vdir), "--name", name,
                "--epochs", str(self.epochs_spin.value()), "--batch", str(self.batch_spin.value()),
                "--device", self.device_combo.currentText(), "--val-every", "1"]
        start = self.start_combo.currentText()
        if start != FROM_DATA:
            args += ["--from", start]
        else:
            args += ["--network", self.network_combo.currentText()]
        if size:
            args += ["--patch", *map(str, size)]
        return self.start_run(args, {"kind": "train", "name": name, "vdir": vdir, "data": data,
                                     "started_from": None if start == FROM_DATA else start})

    # ------------------------------------------------------------------ runs
    @property
    def running(self) -> bool:
        """Whether a training run is going on."""
        return self._run is not None and self._run.running

    def start_run(self, args: list[str], job: dict[str, Any],
                  on_done: Callable[[dict[str, Any]], None] | None = None) -> bool:
        """Start a ``napari-cxseg train`` subprocess for ``job`` (name, vdir, kind ...)."""
        if self.running:
            self.fail("A training run is going on; cancel it or wait for it to end.")
            return False
        self._job = {**job, "args": list(args), "on_done": on_done, "t0": time.time()}
        run = TrainRun(args, parent=self)
        run.started_run.connect(self._on_start)
        run.epoch.connect(self._on_epoch)
        run.ended.connect(self._on_ended)
        self._run = run
        self._set_running(True)
        self.result.setText("")
        self.plot.set_history([], title=f"{job['name']} {Path(job['vdir']).name}: starting")
        self.run_status.setText(f"Starting {job['kind']} of {job['name']} ({Path(job['vdir']).name}) "
                                f"in a separate process...")
        run.start()
        return True

    def cancel_run(self) -> None:
        """Stop the running subprocess; the last finished epoch's checkpoint stays (Resume)."""
        if self.running:
            self.run_status.setText("Cancelling...")
            self._run.cancel()

    def resume_run(self) -> bool:
        """Re-run the last run with ``--resume`` (continues from its last finished epoch)."""
        job = dict(self._job)
        if not job or self.running:
            return False
        args = [a for a in job.pop("args") if a != "--resume"] + ["--resume"]
        on_done = job.pop("on_done", None)
        return self.start_run(args, job, on_done)

    def _set_running(self, on: bool) -> None:
        self.cancel_btn.setEnabled(on)
        self.resume_btn.setEnabled(False)
        self.train_btn.setEnabled(not on)
        self.set_tab.set_running(on)

    def _on_start(self, ev: dict[str, Any]) -> None:
        self._job["start"] = ev
        self.run_status.setText(
            f"Training {ev.get('name')} ({ev.get('network')}, {ev.get('spatial_dims')}D): "
            f"{len(ev.get('train', []))} training / {len(ev.get('val', []))} validation cases"
            + (", resumed" if ev.get("resume") else ""))

    def _history(self) -> list[dict[str, Any]]:
        """The run's epochs: ``<out>/train/history.json`` (the checkpoint's own record, written before
        each epoch line, so a resumed or cancelled run shows every finished epoch once), else the lines."""
        import json

        run = self._run
        path = Path(self._job.get("vdir", ".")) / "train" / "history.json"
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(rows, list) and all(isinstance(r, dict) and "epoch" in r for r in rows):
                return rows
        except (OSError, ValueError):
            pass
        by_epoch = {r["epoch"]: r for r in (run.history if run is not None else [])}
        return [by_epoch[k] for k in sorted(by_epoch)]

    def _on_epoch(self, ev: dict[str, Any]) -> None:
        rows = self._history()
        job = self._job
        dice = ev.get("dice")
        self.run_status.setText(
            f"{job.get('name')} {Path(job.get('vdir', '')).name}: epoch {ev.get('epoch')}/{ev.get('epochs')}, "
            f"loss {ev.get('loss', float('nan')):.4f}" + (f", validation Dice {dice:.4f}" if dice is not None else ""))
        self.plot.set_history(rows, title=f"{job.get('name')} {Path(job.get('vdir', '')).name}")

    def _on_ended(self, code: int, outcome: str) -> None:
        from ..training import versions

        run, job = self._run, self._job
        self._set_running(False)
        name, vdir = job.get("name", "?"), Path(job.get("vdir", "."))
        if run is not None:
            run.history = self._history()
            self.plot.set_history(run.history, title=f"{name} {vdir.name}: {outcome.split(':')[0]}")
        if outcome == "finished" and run is not None:
            ev = run.done_event
            per = ", ".join(f"{k} {v:.4f}" for k, v in (ev.get("per_class") or {}).items())
            try:
                versions.record(name, vdir, kind=job.get("kind"), started_from=job.get("started_from"),
                                data=str(job.get("data", "")), best_dice=ev.get("best_dice"),
                                best_epoch=ev.get("best_epoch"), per_class=ev.get("per_class"),
                                validation_cases=(job.get("start") or {}).get("val", []),
                                finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
            except Exception as exc:  # the bundle is there; only the log line is lost
                notify_error(exc, f"Recording version {vdir}")
            self.run_status.setText(f"Done in {time.time() - job.get('t0', time.time()):.0f} s: model '{name}' "
                                    f"({vdir.name}) registered; the Segment widget lists it.")
            self.result.setText(f"Validation (Predictor, each case's own grid): best mean Dice "
                                f"{ev.get('best_dice', float('nan')):.4f} at epoch {ev.get('best_epoch')}"
                                + (f"; {per}" if per else "") + f".\nBundle: {ev.get('bundle')}\n"
                                f"Curve: {ev.get('curve')}")
            model_events().changed.emit(name)
            if job.get("on_done") is not None:
                job["on_done"](ev)
        elif outcome == "cancelled":
            can = versions.resumable(vdir)
            self.run_status.setText(f"Cancelled {name} ({vdir.name})."
                                    + (" Resume continues from the last finished epoch." if can else
                                       " No epoch had finished: nothing to resume."))
            self.resume_btn.setEnabled(can)
        else:
            can = versions.resumable(vdir)
            self.fail(f"Training {name} ({vdir.name}) {outcome}")
            self.resume_btn.setEnabled(can)
        self.run_ended.emit(outcome, name)

    def fail(self, message: str) -> None:
        """Show an error in the run panel and as a napari notification."""
        from napari.utils.notifications import show_error

        self.run_status.setText(message)
        show_error(message)

    def closeEvent(self, event: Any) -> None:  # pragma: no cover - viewer shutdown
        if self.running:
            self._run.cancel()
            self._run.wait(5000)
        super().closeEvent(event)
