"""Train widget, *Training set* tab: add corrected cases, list and remove them, fine-tune, versions.

"Add to training set" writes the chosen Labels layer and its image with
:class:`napari_cxseg.training.trainset.TrainingSet` in a worker; the provenance note comes from
the layer's metadata (the Segment widget stamps the model and keeps its output,
:func:`._segment_result.stored_output`). "Fine-tune" trains a new version of the chosen model
on the set (subprocess, few epochs, fine-tuning learning rate, the card's preprocessing) and
then measures the Dice of the old and the new version on the held-out entries of that run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QSize, Qt, Signal
from qtpy.QtGui import QIcon, QPixmap
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._jobs import start_worker
from ._layers import fill_combo, image_from_layer, label_map_from_layer, notify_error
from ._train_models import model_events

if TYPE_CHECKING:
    from .train import TrainWidget

#: Fraction of the set held out by a fine-tuning run (at least one entry).
HELD_OUT = 0.25


def default_root() -> Path:
    """``<cache>/trainsets/default``."""
    from ..models.weights import cache_dir

    return cache_dir() / "trainsets" / "default"


def compare_versions(old_card: Any, new_card_ref: str, root: Path, held_out: list[str], device: str) -> dict:
    """Dice of the old and the new model on the same held-out cases (worker)."""
    from ..models.cards import find_card
    from ..training.sources import find_cases
    from ..training.validation import validate_cases

    keys = set(held_out)
    cases = [c for c in find_cases(root) if c.key in keys]
    new_card = find_card(new_card_ref)
    before = validate_cases(old_card, None, cases, device)
    after = validate_cases(new_card, None, cases, device)
    return {"cases": [c.key for c in cases], "before": before, "after": after, "new": new_card.name,
            "old": old_card.name}


class TrainingSetTab(QWidget):
    """The training set: add, list, remove; fine-tune the current model on it."""

    #: emitted with the :class:`~napari_cxseg.training.trainset.Entry` that was written
    added = Signal(object)
    #: emitted with the before/after comparison of a fine-tuning run
    compared = Signal(dict)

    def __init__(self, host: TrainWidget):
        super().__init__()
        self.host = host
        self.viewer = host.viewer
        self._worker = None
        self._running = False

        self.folder_edit = QLineEdit(str(default_root()))
        browse = QPushButton("Browse...")
        row = QHBoxLayout()
        row.addWidget(self.folder_edit, 1)
        row.addWidget(browse)
        self.labels_combo = QComboBox()
        self.image_combo = QComboBox()
        self.add_btn = QPushButton("Add to training set")
        self.list = QListWidget()
        self.list.setIconSize(QSize(96, 96))
        self.list.setMinimumHeight(130)
        self.remove_btn = QPushButton("Remove selected")
        self.open_btn = QPushButton("Open selected")
        self.count = QLabel("")
        lrow = QHBoxLayout()
        lrow.addWidget(self.open_btn)
        lrow.addWidget(self.remove_btn)

        box = QGroupBox("Fine-tune on the training set")
        self.model_combo = QComboBox()
        self.ft_name = QLineEdit()
        self.ft_name.setPlaceholderText("versions of (default: the model's own, or <model>-ft)")
        self.ft_epochs = QSpinBox()
        self.ft_epochs.setRange(1, 1000)
        self.ft_epochs.setValue(20)
        self.ft_lr = QDoubleSpinBox()
        self.ft_lr.setDecimals(6)
        self.ft_lr.setRange(1e-6, 1e-1)
        self.ft_lr.setSingleStep(1e-4)
        self.ft_lr.setValue(3e-4)
        self.ft_btn = QPushButton("Fine-tune")
        self.versions_combo = QComboBox()
        self.use_btn = QPushButton("Use this version")
        vrow = QHBoxLayout()
        vrow.addWidget(self.versions_combo, 1)
        vrow.addWidget(self.use_btn)
        ft = QFormLayout(box)
        ft.addRow("Model", self.model_combo)
        ft.addRow("New version of", self.ft_name)
        ft.addRow("Epochs", self.ft_epochs)
        ft.addRow("Learning rate", self.ft_lr)
        ft.addRow(self.ft_btn)
        ft.addRow("Versions", vrow)

        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Folder", row)
        form.addRow("Labels", self.labels_combo)
        form.addRow("Image", self.image_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.add_btn)
        layout.addWidget(self.count)
        layout.addWidget(self.list)
        layout.addLayout(lrow)
        layout.addWidget(box)
        layout.addWidget(self.status)

        browse.clicked.connect(self._browse)
        self.folder_edit.editingFinished.connect(self.refresh_list)
        self.add_btn.clicked.connect(self.add_current)
        self.remove_btn.clicked.connect(self.remove_selected)
        self.open_btn.clicked.connect(self.open_selected)
        self.ft_btn.clicked.connect(self.fine_tune)
        self.use_btn.clicked.connect(self.use_version)
        self.model_combo.currentTextChanged.connect(lambda *_: self.refresh_versions())
        self.ft_name.editingFinished.connect(self.refresh_versions)
        self.labels_combo.currentTextChanged.connect(self._pick_image)
        for ev in ("inserted", "removed", "reordered"):
            getattr(self.viewer.layers.events, ev).connect(self._refresh_layers)
        self._refresh_layers()
        self.refresh_list()

    # ------------------------------------------------------------------ state
    def root(self) -> Path:
        """The training-set folder."""
        return Path(self.folder_edit.text().strip() or default_root()).expanduser()

    def training_set(self) -> Any:
        """The :class:`~napari_cxseg.training.trainset.TrainingSet` (raises ``CxsegError``)."""
        from ..training.trainset import TrainingSet

        return TrainingSet(self.root())

    def set_running(self, on: bool) -> None:
        """A training run started / ended (one at a time)."""
        self._running = on
        self.ft_btn.setEnabled(not on)

    def _browse(self) -> None:  # pragma: no cover - needs a human
        path = QFileDialog.getExistingDirectory(self, "Training-set folder")
        if path:
            self.folder_edit.setText(path)
            self.refresh_list()

    def refresh_models(self, names: list[str]) -> None:
        """Fill the model list (cards changed)."""
        fill_combo(self.model_combo, names)
        self.refresh_versions()

    def _refresh_layers(self, *args: Any) -> None:
        from napari.layers import Image, Labels

        labels = [ly.name for ly in self.viewer.layers if isinstance(ly, Labels)]
        active = self.viewer.layers.selection.active
        fill_combo(self.labels_combo, labels,
                   prefer=active.name if isinstance(active, Labels) else len(labels) - 1)
        fill_combo(self.image_combo, [ly.name for ly in self.viewer.layers if isinstance(ly, Image)])
        self._pick_image()

    def _pick_image(self, *args: Any) -> None:
        """Choose the image the labels were made for (their reference image, else one on their grid)."""
        from napari.layers import Image

        from ..layers import META_KEY, grid_differences, layer_grid_shape, layer_world_affine

        name = self.labels_combo.currentText()
        if not name or name not in self.viewer.layers:
            return
        lab = self.viewer.layers[name]
        ref = (lab.metadata.get(META_KEY) or {}).get("reference_image_path")
        images = [ly for ly in self.viewer.layers if isinstance(ly, Image)]
        same = [ly for ly in images if not grid_differences(layer_grid_shape(ly), layer_world_affine(ly),
                                                             layer_grid_shape(lab), layer_world_affine(lab))]
        hit = next((ly for ly in same if ref and (ly.metadata.get(META_KEY) or {}).get("source_path") == ref),
                   same[0] if same else None)
        if hit is not None:
            self.image_combo.setCurrentText(hit.name)

    # ------------------------------------------------------------------ list
    def refresh_list(self) -> None:
        """Show the set's entries (thumbnails for radiographs, case names for volumes)."""
        from qtpy.QtWidgets import QListView

        self.list.clear()
        try:
            tset = self.training_set()
        except Exception as exc:
            self.count.setText(f"{exc}")
            return
        entries = tset.entries()
        two_d = tset.spatial_dims == 2
        self.list.setViewMode(QListView.ViewMode.IconMode if two_d else QListView.ViewMode.ListMode)
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        for e in entries:
            item = QListWidgetItem(e.case if not two_d else e.case[:18])
            item.setData(Qt.ItemDataRole.UserRole, e.case)
            item.setToolTip(f"{e.case}\nsource: {e.source}\n{e.note}\nclasses: {', '.join(e.classes.values())}"
                            f"\nadded {e.added}")
            thumb = tset.thumbnail_path(e)
            if two_d and thumb.is_file():
                item.setIcon(QIcon(QPixmap(str(thumb))))
            self.list.addItem(item)
        kind = {2: "radiographs", 3: "volumes"}.get(tset.spatial_dims, "cases")
        self.count.setText(f"{len(entries)} {kind} in {tset.root}" if entries else f"Empty: {tset.root}")

    def add_current(self) -> bool:
        """Write the chosen Labels layer and its image into the set (worker)."""
        from ..layers import META_KEY
        from ._layers import check_same_grid
        from ._segment_result import is_edited, stored_output

        lname, iname = self.labels_combo.currentText(), self.image_combo.currentText()
        if lname not in self.viewer.layers or iname not in self.viewer.layers:
            self._fail("Choose a Labels layer and the image it labels.")
            return False
        lab, img = self.viewer.layers[lname], self.viewer.layers[iname]
        try:
            check_same_grid(img, lab)
            image = image_from_layer(self.viewer, img)
            labels = label_map_from_layer(lab)
            labels.array = np.array(labels.array, copy=True)  # painting may go on while it is written
            tset = self.training_set()
        except Exception as exc:
            self._fail(f"Cannot add '{lname}': {exc}")
            return False
        md = lab.metadata.get(META_KEY) or {}
        model = md.get("model")
        output = stored_output(lab) if model else None
        unchanged = model is not None and not is_edited(lab)
        self.add_btn.setEnabled(False)
        self.status.setText(f"Adding '{lname}' ...")

        def done(entry: Any) -> None:
            self.refresh_list()
            if entry.model and self.model_combo.findText(entry.model) >= 0:
                self.model_combo.setCurrentText(entry.model)
            self.status.setText(f"Added {entry.case} ({entry.note})."
                                + (" Note: the labels are the model's output unchanged." if unchanged else ""))
            self.added.emit(entry)

        self._worker = start_worker(tset.add, image, labels, model, output, on_done=done,
                                    on_error=lambda e: self._fail(f"Adding '{lname}' to {tset.root} failed: {e}"),
                                    on_finished=lambda: self.add_btn.setEnabled(True))
        return True

    def _selected_case(self) -> str | None:
        item = self.list.currentItem()
        return None if item is None else str(item.data(Qt.ItemDataRole.UserRole))

    def remove_selected(self) -> None:
        """Delete the selected entry's files and its line in dataset.json."""
        case = self._selected_case()
        if case is None:
            self._fail("Select an entry to remove.")
            return
        try:
            self.training_set().remove(case)
        except Exception as exc:
            self._fail(f"Removing {case} failed: {exc}")
            return
        self.status.setText(f"Removed {case}.")
        self.refresh_list()

    def open_selected(self) -> None:
        """Open the selected entry's image and labels in the viewer."""
        case = self._selected_case()
        try:
            entry = next(e for e in self.training_set().entries() if e.case == case)
            self.viewer.open([str(entry.image)], plugin="napari-cxseg")
            self.viewer.open([str(entry.label)], plugin="napari-cxseg")
        except StopIteration:
            self._fail("Select an entry to open.")
        except Exception as exc:
            self._fail(f"Opening {case} failed: {exc}")

    # ------------------------------------------------------------------ fine-tune
    def _lineage_name(self) -> str:
        from ..models.cards import find_card
        from ..training.versions import lineage

        if self.ft_name.text().strip():
            return self.ft_name.text().strip()
        model = self.model_combo.currentText()
        try:
            return lineage(find_card(model)) or f"{model}-ft"
        except Exception:
            return f"{model}-ft"

    def fine_tune(self) -> bool:
        """Train a new version of the chosen model on the set (subprocess), then compare on held-out entries."""
        from ..models.cards import find_card
        from ..training.sources import split_cases
        from ..training.versions import check_name, next_version_dir

        model = self.model_combo.currentText()
        try:
            card = find_card(model)
            tset = self.training_set()
            if len(tset) < 2:
                raise ValueError(f"the training set has {len(tset)} case(s); fine-tuning needs at least 2 "
                                 "(at least one is held out to measure the Dice before and after)")
            if tset.spatial_dims != card.spatial_dims:
                raise ValueError(f"{model} is a {card.spatial_dims}D model; the set holds "
                                 f"{tset.spatial_dims}D cases")
            name = check_name(self._lineage_name())
            train, val = split_cases(tset.cases(), HELD_OUT, seed=0)
        except Exception as exc:
            self._fail(f"Cannot fine-tune {model}: {exc}")
            return False
        epochs = self.ft_epochs.value()
        vdir = next_version_dir(name)
        ref = str(card.path or card.bundle_dir or model)
        args = ["--data", str(tset.root), "--out", str(vdir), "--name", name, "--from", ref,
                "--epochs", str(epochs), "--lr", f"{self.ft_lr.value():g}",
                "--batch", str(max(1, min(4, len(train)))), "--val-split", str(HELD_OUT),
                "--val-every", str(epochs), "--device", self.host.device_combo.currentText()]
        self.status.setText(f"Fine-tuning {model} on {len(train)} case(s), {len(val)} held out"
                            + (" (a very small set: one case held out)" if len(val) == 1 else "") + "...")
        job = {"kind": "fine-tune", "name": name, "vdir": vdir, "data": str(tset.root), "started_from": model}
        return self.host.start_run(args, job, on_done=lambda ev: self._compare(card, ev, job))

    def _compare(self, old_card: Any, ev: dict[str, Any], job: dict[str, Any]) -> None:
        held = list((self.host._job.get("start") or {}).get("val", []))
        name = job["name"]
        if not held:
            self.status.setText("No held-out case: nothing to compare.")
            return
        if self.model_combo.findText(name) >= 0:
            self.model_combo.setCurrentText(name)
        self.status.setText(f"Measuring {old_card.name} and {name} on {len(held)} held-out case(s)...")
        self._worker = start_worker(compare_versions, old_card, ev.get("card") or name, self.root(), held,
                                    self.host.device_combo.currentText(),
                                    on_done=lambda res: self._show_comparison(res, job),
                                    on_error=lambda e: self._fail(f"Measuring the held-out Dice failed: {e}"))

    def _show_comparison(self, res: dict[str, Any], job: dict[str, Any]) -> None:
        from ..training import versions

        b, a = res["before"], res["after"]
        per = ", ".join(f"{k} {b['per_class'].get(k, float('nan')):.3f} -> {v:.3f}" for k, v in a["per_class"].items())
        text = (f"Held-out Dice ({len(res['cases'])} case(s): {', '.join(c.split('/')[-1] for c in res['cases'])}): "
                f"{res['old']} {b['dice']:.4f} -> {res['new']} {Path(job['vdir']).name} {a['dice']:.4f} ({per}).")
        self.status.setText(text)
        self.host.result.setText(self.host.result.text() + "\n" + text)
        try:
            versions.record(job["name"], job["vdir"], dice_before=b["dice"], dice_after=a["dice"],
                            per_class_before=b["per_class"], per_class_after=a["per_class"], held_out=res["cases"],
                            metrics={"held_out_dice_before": round(b["dice"], 4),
                                     "held_out_dice_after": round(a["dice"], 4)})
        except Exception as exc:
            notify_error(exc, f"Recording the comparison in {job['vdir']}")
        self.refresh_versions()
        self.compared.emit(res)

    # ------------------------------------------------------------------ versions
    def refresh_versions(self) -> None:
        """List the finished versions of the model's lineage."""
        from ..training import versions

        self.versions_combo.clear()
        try:
            name = versions.check_name(self._lineage_name())
            log = {r.get("version"): r for r in versions.read_log(name)}
            for _, vdir in versions.version_dirs(name):
                if versions.finished(vdir):
                    r = log.get(vdir.name, {})
                    d = r.get("dice_after", r.get("best_dice"))
                    self.versions_combo.addItem(f"{name} {vdir.name}" + (f" (Dice {d:.3f})" if d is not None else ""),
                                                str(vdir))
        except Exception:  # no lineage yet
            pass
        self.use_btn.setEnabled(self.versions_combo.count() > 0)

    def use_version(self) -> None:
        """Point the model's card at the chosen version (e.g. back to an older one)."""
        from ..training import versions

        vdir = self.versions_combo.currentData()
        if not vdir:
            return
        name = Path(vdir).parent.name
        try:
            versions.use_version(name, Path(vdir))
        except Exception as exc:
            self._fail(f"Cannot use {vdir}: {exc}")
            return
        self.status.setText(f"Model '{name}' now runs version {Path(vdir).name}.")
        model_events().changed.emit(name)

    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(message)
        show_error(message)
