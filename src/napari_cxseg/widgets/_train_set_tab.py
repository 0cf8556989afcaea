"""Train widget, *Training set* tab: add corrected cases, list and remove them, fine-tune, versions.

"Add to training set" writes the chosen Labels layer and its image with
:class:`napari_cxseg.training.trainset.TrainingSet` in a worker; the provenance note comes from
the layer's metadata (the Segment widget stamps the model and keeps its output,
:func:`._segment_result.stored_output`). The fine-tuning controls (a new version of the
chosen model, the held-out Dice before and after, versions) are in :mod:`._train_finetune`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QSize, Qt, Signal
from qtpy.QtGui import QIcon, QPixmap
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ._jobs import start_worker
from ._layers import fill_combo, image_from_layer, label_map_from_layer
from ._train_finetune import FineTuneMixin

if TYPE_CHECKING:
    from .train import TrainWidget


def default_root() -> Path:
    """``<cache>/trainsets/default``."""
    from ..models.weights import cache_dir

    return cache_dir() / "trainsets" / "default"


class TrainingSetTab(FineTuneMixin, QWidget):
    """The training set: add, list, remove; fine-tune the current model on it."""

    #: emitted with the :class:`~napari_cxseg.training.trainset.Entry` that was written
    added = Signal(object)
    #: emitted with the before/after comparison of a fine-tuning run (:class:`FineTuneMixin`)
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

        box = self._build_fine_tune()

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
        if not image.modality and model:  # a NIfTI says no modality: the model that read it does
            try:
                from ..models.cards import find_card

                mods = [m for m in find_card(model).modality if m]
                image.modality = mods[0] if len(mods) == 1 else ""
            except Exception:
                pass
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

    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(message)
        show_error(message)
