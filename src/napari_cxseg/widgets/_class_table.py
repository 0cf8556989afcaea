"""Correct-widget panel listing a layer's classes: id, name, colour, size; add/rename/merge...

Names and colours are written to the layer's ``features`` table and direct colormap, so
napari's status bar shows the class name under the cursor. Merging and deleting change the
array and are one undoable step each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QColorDialog,
    QGridLayout,
    QHeaderView,
    QInputDialog,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..images import CxsegError, LabelClass
from ._jobs import LatestOnly, ToolResult
from ._layers import set_classes
from ._preview import layer_classes

if TYPE_CHECKING:
    from .correct import CorrectWidget

COLUMNS = ("Id", "Name", "", "Voxels", "Size")


def _sizes(arr: np.ndarray, spacing: np.ndarray) -> dict[int, tuple[int, float]]:
    from ..editing.classes import class_sizes

    return class_sizes(arr, spacing)


def size_text(size_mm: float, ndim: int) -> str:
    """``"12.3 mm²"`` for 2D, ``"4.56 mL"`` for 3D."""
    return f"{size_mm:.1f} mm²" if ndim == 2 else f"{size_mm / 1000.0:.3f} mL"


class ClassesPanel(QWidget):
    """Table of the target layer's classes with add / rename / recolour / merge / delete."""

    #: emitted after the table was refilled
    refreshed = Signal()

    def __init__(self, host: CorrectWidget):
        super().__init__()
        self.host = host
        self.sizes: dict[int, tuple[int, float]] = {}
        #: classes removed by a merge/delete here, named again if an undo brings voxels back
        self.removed: dict[int, LabelClass] = {}
        self._before_classes: dict[int, LabelClass] = {}
        self._filling = False
        self.job = LatestOnly(self)
        self.job.failed.connect(lambda exc: host.report_error("Class sizes", exc))
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(300)
        self.timer.timeout.connect(self.refresh)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
        )
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Fixed)
        self.table.setColumnWidth(2, 22)
        self.table.setMinimumHeight(140)

        self.add_btn = QPushButton("Add...")
        self.colour_btn = QPushButton("Colour...")
        self.merge_btn = QPushButton("Merge into class")
        self.merge_btn.setToolTip(
            "Move the voxels of the highlighted rows into the Class chosen above"
        )
        self.delete_btn = QPushButton("Delete")
        self.delete_btn.setToolTip("Erase the highlighted classes (one undoable step)")
        buttons = QGridLayout()
        buttons.addWidget(self.add_btn, 0, 0)
        buttons.addWidget(self.colour_btn, 0, 1)
        buttons.addWidget(self.merge_btn, 1, 0)
        buttons.addWidget(self.delete_btn, 1, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addLayout(buttons)

        self.add_btn.clicked.connect(self._on_add)
        self.colour_btn.clicked.connect(self._on_colour)
        self.merge_btn.clicked.connect(self._on_merge)
        self.delete_btn.clicked.connect(self._on_delete)
        self.table.itemChanged.connect(self._on_item_changed)
        self.table.cellDoubleClicked.connect(self._on_double_click)
        host.layer_changed.connect(self.schedule)
        self.schedule()

    # ------------------------------------------------------------------ refresh
    def schedule(self) -> None:
        """Refresh the sizes soon (edits come in bursts while painting)."""
        self.timer.start()

    def refresh(self) -> None:
        """Recount the classes in a worker, then refill the table."""
        self.timer.stop()
        layer = self.host._layer
        if layer is None:
            self.sizes = {}
            self.fill()
            return
        try:
            spacing = self.host.spacing()
        except Exception as exc:
            self.host.report_error("Class sizes", exc)
            return
        arr = np.array(layer.data, copy=True)

        def done(sizes: dict[int, tuple[int, float]]) -> None:
            if layer is self.host._layer:
                self.sizes = sizes
                self._rename_returned(layer)
                self.fill()

        self.job.submit(_sizes, arr, spacing, on_done=done)

    def _rename_returned(self, layer) -> None:
        """Give back names/colours to classes that an undo of a merge/delete brought back."""
        known = layer_classes(layer)
        back = {
            k: self.removed.pop(k) for k in list(self.removed) if k in self.sizes and k not in known
        }
        if back:
            set_classes(layer, {**layer_classes(layer, self.sizes), **back})

    def fill(self) -> None:
        """Refill the table from the layer's classes and the last sizes."""
        layer = self.host._layer
        classes = layer_classes(layer, self.sizes) if layer is not None else {}
        self._filling = True
        self.table.setRowCount(len(classes))
        for row, (cid, cls) in enumerate(classes.items()):
            voxels, size = self.sizes.get(cid, (0, 0.0))
            cells = [str(cid), cls.name, "", str(voxels), size_text(size, layer.ndim)]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                flags = Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled
                if col == 1:
                    flags |= Qt.ItemFlag.ItemIsEditable
                item.setFlags(flags)
                item.setData(Qt.ItemDataRole.UserRole, cid)
                if col == 2:
                    item.setBackground(QColor(cls.colour))
                    item.setToolTip(f"{cls.colour} (double-click to change)")
                if col in (0, 3, 4):
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                self.table.setItem(row, col, item)
        self._filling = False
        self.refreshed.emit()

    # ------------------------------------------------------------------ table rows
    def row_of(self, cid: int) -> int:
        """Table row of class ``cid`` (-1 when absent)."""
        for row in range(self.table.rowCount()):
            if int(self.table.item(row, 0).text()) == int(cid):
                return row
        return -1

    def highlighted(self) -> list[int]:
        """Class ids of the highlighted rows."""
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [int(self.table.item(r, 0).text()) for r in rows]

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if self._filling or item.column() != 1:
            return
        cid = int(item.data(Qt.ItemDataRole.UserRole))
        try:
            self.rename(cid, item.text())
        except Exception as exc:
            self.host.report_error("Rename class", exc)
            self.fill()

    def _on_double_click(self, row: int, col: int) -> None:
        if col == 2:
            self._recolour_row(row)

    # ------------------------------------------------------------------ name / colour
    def _classes(self) -> dict:
        return layer_classes(self.host.labels_layer(), self.sizes)

    def _write_classes(self, classes: dict) -> None:
        set_classes(self.host.labels_layer(), classes)
        self.fill()

    def add_class(self, name: str, colour: str | None = None) -> int:
        """Add a class (the next free id) and select it for painting; returns its id."""
        from ..editing.classes import add_class, next_free_id

        layer = self.host.labels_layer()
        classes = self._classes()
        cid = next_free_id(classes)
        if np.issubdtype(layer.data.dtype, np.integer) and cid > np.iinfo(layer.data.dtype).max:
            raise CxsegError(f"class id {cid} does not fit the layer's {layer.data.dtype} data")
        classes, cid = add_class(classes, name, colour, class_id=cid)
        self._write_classes(classes)
        layer.selected_label = cid
        return cid

    def rename(self, cid: int, name: str) -> None:
        """Rename class ``cid`` (features and colormap follow; the status bar shows it)."""
        from ..editing.classes import rename_class

        self._write_classes(rename_class(self._classes(), cid, name))
        self.host.status.setText(f"Class {cid} is now '{name.strip()}'.")

    def recolour(self, cid: int, colour: str) -> None:
        """Give class ``cid`` the colour ``colour`` (hex)."""
        from ..editing.classes import recolour_class

        self._write_classes(recolour_class(self._classes(), cid, colour))

    def choose_colour(self, current: str) -> str | None:
        """Ask for a colour (a dialog); ``None`` when cancelled. Tests override it."""
        colour = QColorDialog.getColor(QColor(current), self, "Class colour")
        return colour.name() if colour.isValid() else None

    def choose_name(self) -> str | None:
        """Ask for a new class's name (a dialog); ``None`` when cancelled. Tests override it."""
        name, ok = QInputDialog.getText(self, "Add class", "Name of the new class:")
        return name if ok and name.strip() else None

    def _recolour_row(self, row: int) -> None:
        cid = int(self.table.item(row, 0).text())
        try:
            colour = self.choose_colour(self._classes()[cid].colour)
            if colour:
                self.recolour(cid, colour)
        except Exception as exc:
            self.host.report_error("Recolour class", exc)

    def _on_add(self) -> None:
        name = self.choose_name()
        if name:
            try:
                self.add_class(name)
            except Exception as exc:
                self.host.report_error("Add class", exc)

    def _on_colour(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        if rows:
            self._recolour_row(rows[0])

    # ------------------------------------------------------------------ array edits
    def merge(self, src_ids: list[int], dst: int) -> bool:
        """Merge classes ``src_ids`` into ``dst`` (one undoable step)."""

        def prepare():
            from ..editing.classes import merge_classes

            classes = self._before_classes = self._classes()
            if dst not in classes:
                raise CxsegError(f"class {dst} does not exist")
            src = [int(s) for s in src_ids if int(s) != int(dst)]
            if not src:
                raise CxsegError("highlight the classes to merge into the selected class")

            def compute(arr: np.ndarray) -> ToolResult:
                out, new = merge_classes(arr, classes, src, dst)
                return ToolResult(out, new, f"Merged {src} into {dst}")

            return compute

        return self.host.run_tool("Merge classes", prepare, on_applied=self._after_removal)

    def _after_removal(self, result: ToolResult) -> None:
        old = self._before_classes
        self.removed.update({k: v for k, v in old.items() if k not in (result.classes or {})})
        self.fill()

    def delete(self, cids: list[int]) -> bool:
        """Erase classes ``cids`` from the array and the class list (one undoable step)."""

        def prepare():
            from ..editing.classes import delete_class

            classes = self._before_classes = self._classes()
            ids = [int(c) for c in cids]
            if not ids:
                raise CxsegError("highlight the classes to delete")

            def compute(arr: np.ndarray) -> ToolResult:
                out, new = arr, classes
                for cid in ids:
                    out, new = delete_class(out, new, cid)
                return ToolResult(out, new, f"Deleted classes {ids}")

            return compute

        return self.host.run_tool("Delete classes", prepare, on_applied=self._after_removal)

    def _on_merge(self) -> None:
        try:
            dst = self.host.current_label()
        except Exception as exc:
            self.host.report_error("Merge classes", exc)
            return
        self.merge(self.highlighted(), dst)

    def _on_delete(self) -> None:
        self.delete(self.highlighted())

    def deactivate(self) -> None:
        """Nothing to clean up when folded away."""
