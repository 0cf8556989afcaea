"""CXLSeg dataset browser: list, filter and open cases, check a model's Dice, save corrected masks.

The table is a lazy Qt model over the joined CSVs (:mod:`._cxlseg_model`); reading the CSVs,
loading a case, predicting and saving all run in workers. A case opens as an image layer and a
Labels layer (1 right, 2 left lung: the dataset mask split by anatomy). Stepping away from a
mask with unsaved edits needs a second press. Saving writes the mask back to its own path,
size and format and keeps the original in ``cxseg-backups/`` (:mod:`napari_cxseg.cxlseg_masks`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ._alive import enable_if_alive
from ._cxlseg_model import CXLSegTableModel
from ._jobs import start_worker

if TYPE_CHECKING:
    import napari

ALL = "all"
IMAGE_LAYER, MASK_LAYER, PRED_LAYER = "CXLSeg image", "CXLSeg mask", "CXLSeg prediction"


def _dice_job(image: Any, mask: np.ndarray, model: str, device: str) -> dict[str, Any]:
    from ..cxlseg_export import lung_mask
    from ..inference import Predictor
    from ..training.targets import split_lungs

    lab = Predictor(model, device=device).predict(image)
    pred = split_lungs(lung_mask(lab))
    out: dict[str, Any] = {"label_map": lab}
    for name, p, r in (("lungs", pred > 0, mask > 0), ("right", pred == 1, mask == 1), ("left", pred == 2, mask == 2)):
        s = int(p.sum()) + int(r.sum())
        out[name] = 2.0 * float(np.logical_and(p, r).sum()) / s if s else 1.0
    return out


class CXLSegBrowser(QWidget):
    """Browse a CXLSeg dataset folder."""

    #: emitted after a table was read (number of rows)
    loaded = Signal(int)
    #: emitted with the dicom_id of a case that opened
    opened = Signal(str)
    #: emitted with the Dice dict of a check
    checked = Signal(object)
    #: emitted with the save result dict
    saved = Signal(object)
    #: emitted with an error message
    failed = Signal(str)

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.model = CXLSegTableModel(parent=self)
        self.root: str | None = None
        self.current: Any = None  # LoadedCase
        self._loaded_mask: np.ndarray | None = None
        self._warned_unsaved = False
        self._busy = False

        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("CXLSeg dataset folder (with CXLSeg-mask.csv)")
        self.folder_btn = QPushButton("...")
        self.images_edit = QLineEdit()
        self.images_edit.setPlaceholderText("MIMIC-CXR-JPG root (default: the dataset folder or a sibling)")
        self.open_btn = QPushButton("Open dataset")
        self.split_combo, self.view_combo, self.finding_combo = QComboBox(), QComboBox(), QComboBox()
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("dicom_id / subject / study contains")
        self.view = QTableView()
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.prev_btn, self.show_btn, self.next_btn = QPushButton("< Previous"), QPushButton("Open case"), QPushButton("Next >")
        self.model_combo = QComboBox()
        self.dice_btn = QPushButton("Model Dice")
        self.save_btn = QPushButton("Save corrected mask")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        top = QHBoxLayout()
        top.addWidget(self.folder_edit)
        top.addWidget(self.folder_btn)
        filters = QHBoxLayout()
        for w in (self.split_combo, self.view_combo, self.finding_combo, self.search_edit):
            filters.addWidget(w)
        steps = QHBoxLayout()
        for w in (self.prev_btn, self.show_btn, self.next_btn):
            steps.addWidget(w)
        check = QHBoxLayout()
        for w in (self.model_combo, self.dice_btn, self.save_btn):
            check.addWidget(w)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.images_edit)
        layout.addWidget(self.open_btn)
        layout.addLayout(filters)
        layout.addWidget(self.view)
        layout.addLayout(steps)
        layout.addLayout(check)
        layout.addWidget(self.status)

        self.folder_btn.clicked.connect(self._choose_folder)
        self.open_btn.clicked.connect(lambda: self.open_dataset(self.folder_edit.text().strip()))
        for combo in (self.split_combo, self.view_combo, self.finding_combo):
            combo.currentTextChanged.connect(self.apply_filters)
        self.search_edit.editingFinished.connect(self.apply_filters)
        self.show_btn.clicked.connect(self.open_selected)
        self.view.doubleClicked.connect(lambda idx: self.open_row(idx.row()))
        self.prev_btn.clicked.connect(lambda: self.step(-1))
        self.next_btn.clicked.connect(lambda: self.step(1))
        self.dice_btn.clicked.connect(self.check_dice)
        self.save_btn.clicked.connect(self.save_mask)
        self._fill_models()

    def _fill_models(self) -> None:
        from ..models.cards import list_cards

        try:
            names = [c.name for c in list_cards([]) if c.spatial_dims == 2 and "XR" in c.modality and c.name != "cxr-clicks"]
        except Exception:  # a broken card must not kill the widget
            names = []
        self.model_combo.addItems(names or ["cxr-lungs"])

    def _choose_folder(self) -> None:  # pragma: no cover - needs a human
        path = QFileDialog.getExistingDirectory(self, "CXLSeg dataset folder")
        if path:
            self.folder_edit.setText(path)

    # ------------------------------------------------------------------ table
    def open_dataset(self, folder: str) -> None:
        """Read the dataset's CSVs in a worker and show them."""
        from ..cxlseg import browse_table

        if not folder:
            self._fail("Choose a CXLSeg dataset folder first.")
            return
        self.status.setText(f"Reading the CSVs of {folder}...")
        self.open_btn.setEnabled(False)
        start_worker(browse_table, folder, on_done=lambda t: self._on_table(folder, t),
                     on_error=lambda e: self._fail(f"Opening the CXLSeg dataset {folder} failed: {e}"),
                     on_finished=lambda: enable_if_alive(self.open_btn))

    def _on_table(self, folder: str, table: Any) -> None:
        from ..cxlseg import SPLITS, finding_columns

        self.root = folder
        self.model.set_table(table)
        for combo, items in ((self.split_combo, [s for s in SPLITS if (table["split"] == s).any()]),
                             (self.view_combo, sorted(v for v in table["view"].unique() if v)),
                             (self.finding_combo, finding_columns(table))):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([ALL, *items])
            combo.blockSignals(False)
        self.status.setText(f"{len(table)} cases in {folder}.")
        self.loaded.emit(len(table))

    def apply_filters(self, *args: Any) -> None:
        """Show the rows that pass the split / view / finding / text filters."""
        from ..cxlseg import filter_rows

        table = self.model.table
        if table is None:
            return

        def pick(c: QComboBox) -> str | None:
            return None if c.currentText() in ("", ALL) else c.currentText()

        rows = filter_rows(table, pick(self.split_combo), pick(self.view_combo), pick(self.finding_combo),
                           self.search_edit.text().strip() or None)
        self.model.set_rows(rows)
        self.status.setText(f"{len(rows)} of {len(table)} cases.")

    # ------------------------------------------------------------------ cases
    def open_selected(self) -> None:
        sel = self.view.selectionModel().selectedRows()
        self.open_row(sel[0].row() if sel else 0)

    def step(self, delta: int) -> None:
        """Open the previous (-1) or next (+1) case of the filtered list."""
        cur = self.view.currentIndex().row()
        self.open_row(max(0, min(self.model.rowCount() - 1, (cur if cur >= 0 else -delta) + delta)))

    def _has_unsaved_edits(self) -> bool:
        if self._loaded_mask is None or MASK_LAYER not in self.viewer.layers:
            return False
        return not np.array_equal(np.asarray(self.viewer.layers[MASK_LAYER].data), self._loaded_mask)

    def open_row(self, row: int) -> None:
        """Load view row ``row`` (image + mask) in a worker."""
        from ..cxlseg_masks import load_case

        if self.root is None or not 0 <= row < self.model.rowCount():
            return
        if self._busy:
            self.status.setText("Still loading the previous case.")
            return
        if self._has_unsaved_edits() and not self._warned_unsaved:
            self._warned_unsaved = True
            self.status.setText(f"'{MASK_LAYER}' has unsaved edits: press Save, or press again to discard them.")
            return
        rec = self.model.record(row)
        self.view.selectRow(row)
        self._busy = True
        self.status.setText(f"Opening {rec.get('dicom_id')}...")
        start_worker(load_case, self.root, str(rec["mask_path"]), str(rec.get("dicom_id") or ""),
                     self.images_edit.text().strip() or None, rec, on_done=self._on_case,
                     on_error=lambda e: self._fail(f"Opening case {rec.get('dicom_id')} ({rec.get('mask_path')}) failed: {e}"),
                     on_finished=self._done)

    def _done(self) -> None:
        self._busy = False

    def _on_case(self, case: Any) -> None:
        from ..layers import image_layer_data, labels_layer_data

        for name in (PRED_LAYER, MASK_LAYER, IMAGE_LAYER):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        d, kw, _ = image_layer_data(case.image, name=IMAGE_LAYER)
        self.viewer.add_image(d, **kw)
        d, kw, _ = labels_layer_data(case.mask, name=MASK_LAYER)
        layer = self.viewer.add_labels(d, **kw)
        self.viewer.layers.selection.active = layer
        self.current = case
        self._busy = False
        self._loaded_mask = np.array(layer.data, copy=True)
        self._warned_unsaved = False
        self.status.setText(f"{case.dicom_id}: {case.image_path.name}, mask {case.mask_path.name}.")
        self.opened.emit(case.dicom_id)

    # ------------------------------------------------------------------ model + save
    def check_dice(self) -> None:
        """Predict the open case with the chosen model and show its Dice against the dataset mask."""
        if self.current is None:
            self._fail("Open a case first.")
            return
        case, model = self.current, self.model_combo.currentText()
        self.dice_btn.setEnabled(False)
        self.status.setText(f"Predicting {case.dicom_id} with {model}...")
        start_worker(_dice_job, case.image, np.asarray(case.mask.array), model, "auto",
                     on_done=self._on_dice, on_error=lambda e: self._fail(f"Model {model} on {case.dicom_id} failed: {e}"),
                     on_finished=lambda: enable_if_alive(self.dice_btn))

    def _on_dice(self, res: dict[str, Any]) -> None:
        from ..layers import labels_layer_data

        if PRED_LAYER in self.viewer.layers:
            self.viewer.layers.remove(PRED_LAYER)
        d, kw, _ = labels_layer_data(res["label_map"], name=PRED_LAYER)
        kw["visible"] = False
        self.viewer.add_labels(d, **kw)
        self.status.setText(f"{self.current.dicom_id}: Dice lungs {res['lungs']:.3f} (right {res['right']:.3f}, "
                            f"left {res['left']:.3f}) against the dataset mask.")
        self.checked.emit(res)

    def save_mask(self) -> None:
        """Save the mask layer back into the dataset (original kept in cxseg-backups/)."""
        from ..cxlseg_masks import save_corrected_mask

        if self.current is None or MASK_LAYER not in self.viewer.layers:
            self._fail("Open a case first.")
            return
        case = self.current
        labels = np.array(self.viewer.layers[MASK_LAYER].data, copy=True)
        rel = str(case.mask_path.relative_to(self.root))
        self.save_btn.setEnabled(False)
        start_worker(save_corrected_mask, self.root, rel, labels, case.image, case.dicom_id,
                     on_done=lambda r: self._on_saved(r, labels),
                     on_error=lambda e: self._fail(f"Saving the mask of {case.dicom_id} to {case.mask_path} failed: {e}"),
                     on_finished=lambda: enable_if_alive(self.save_btn))

    def _on_saved(self, result: dict[str, Any], labels: np.ndarray) -> None:
        self._loaded_mask = labels
        backup = result.get("backup")
        self.status.setText(f"Saved {result['path']}" + (f" (original kept as {backup})." if backup else "."))
        self.saved.emit(result)

    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self._busy = False
        self.status.setText(message)
        show_error(message)
        self.failed.emit(message)
