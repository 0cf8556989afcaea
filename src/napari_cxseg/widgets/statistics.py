"""Statistics dock widget: size, intensity and position of every class, live, with CSV export.

The table follows the Labels layer as it is painted (debounced) and is computed in a worker
by :func:`napari_cxseg.editing.statistics.label_statistics`; a row's intensity histogram is
drawn below it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..images import CxsegError
from ..layers import geometry_from_layer_meta, layer_state
from ._correct_tools import compact_combo
from ._histogram import HistogramView
from ._jobs import LatestOnly
from ._layers import fill_combo, image_on_grid, notify_error
from ._preview import image_layers, layer_classes, user_labels_layers

if TYPE_CHECKING:
    import napari

NO_IMAGE = "(none)"


def _measure(
    labels: np.ndarray, image: np.ndarray | None, affine: np.ndarray, classes: dict
) -> list[dict]:
    from ..editing.statistics import label_statistics

    return label_statistics(labels, image, affine=affine, classes=classes)


def _histogram(image: np.ndarray, labels: np.ndarray, label: int) -> tuple[np.ndarray, np.ndarray]:
    from ..editing.statistics import histogram

    return histogram(image, labels, label, bins=64)


def display_columns(ndim: int) -> list[tuple[str, str]]:
    """``(header, row key)`` of the table's columns for ``ndim``-D labels."""
    size = ("Area (mm²)", "area_mm2") if ndim == 2 else ("Volume (mL)", "volume_ml")
    return [
        ("Class", "name"),
        ("Voxels", "voxels"),
        size,
        ("Mean", "mean"),
        ("Std", "std"),
        ("Min", "min"),
        ("Max", "max"),
        ("Bounding box", "bbox"),
        ("Centroid (mm)", "centroid"),
    ]


def _axes(row: dict) -> list[str]:
    return [k[len("centroid_") : -len("_mm")] for k in row if k.startswith("centroid_")]


def cell_text(row: dict, key: str) -> str:
    """The text of one table cell."""
    if key == "name":
        return f"{row['label']}: {row['name']}"
    if key == "bbox":
        if row["voxels"] == 0:
            return "-"
        return ", ".join(
            f"{a} {row[f'bbox_{a}_start']}-{row[f'bbox_{a}_stop'] - 1}" for a in _axes(row)
        )
    if key == "centroid":
        if row["voxels"] == 0:
            return "-"
        return ", ".join(f"{row[f'centroid_{a}_mm']:.1f}" for a in _axes(row))
    value = row[key]
    if isinstance(value, float):
        if np.isnan(value):
            return "-"
        return f"{value:.4g}" if key != "volume_ml" else f"{value:.3f}"
    return str(value)


class StatisticsWidget(QWidget):
    """Per-class measurements of a Labels layer over an optional image.

    Parameters
    ----------
    napari_viewer
        The viewer (injected by napari).
    """

    #: emitted when the table holds fresh rows
    refreshed = Signal()
    #: emitted when a histogram was drawn
    histogram_shown = Signal(int)

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.rows: list[dict] = []
        self._layer = None
        self._ndim = 2
        self.job = LatestOnly(self)
        self.job.failed.connect(lambda exc: self._fail("Statistics", exc))
        self.hist_job = LatestOnly(self)
        self.hist_job.failed.connect(lambda exc: self._fail("Histogram", exc))
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(400)
        self.timer.timeout.connect(self.refresh)

        self.labels_combo = compact_combo()
        self.image_combo = compact_combo()
        self.table = QTableWidget(0, 0)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.histogram = HistogramView()
        self.refresh_btn = QPushButton("Refresh")
        self.export_btn = QPushButton("Export CSV...")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Labels", self.labels_combo)
        form.addRow("Image", self.image_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.refresh_btn)
        buttons.addWidget(self.export_btn)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.table, 1)
        layout.addWidget(QLabel("Intensity histogram of the selected class"))
        layout.addWidget(self.histogram)
        layout.addLayout(buttons)
        layout.addWidget(self.status)

        self.refresh_btn.clicked.connect(self.refresh)
        self.export_btn.clicked.connect(self._on_export)
        self.labels_combo.currentTextChanged.connect(self._on_labels_changed)
        self.image_combo.currentTextChanged.connect(lambda _: self.schedule())
        self.table.itemSelectionChanged.connect(self.show_histogram)
        for ev in ("inserted", "removed", "reordered"):
            getattr(self.viewer.layers.events, ev).connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------ layers
    def _refresh_layers(self, event: Any = None) -> None:
        labels = [ly.name for ly in user_labels_layers(self.viewer)]
        images = [NO_IMAGE, *(ly.name for ly in image_layers(self.viewer))]
        fill_combo(self.labels_combo, labels, prefer=len(labels) - 1)
        fill_combo(self.image_combo, images, prefer=len(images) - 1 if len(images) > 1 else None)
        self._on_labels_changed(self.labels_combo.currentText())

    def _on_labels_changed(self, name: str) -> None:
        layer = self.viewer.layers[name] if name and name in self.viewer.layers else None
        if layer is self._layer:
            return
        events = ("paint", "data", "labels_update", "features", "colormap")
        if self._layer is not None:
            for ev in events:
                getattr(self._layer.events, ev).disconnect(self.schedule)
        self._layer = layer
        if layer is not None:
            for ev in events:
                getattr(layer.events, ev).connect(self.schedule)
        self.schedule()

    def labels_layer(self):
        """The measured Labels layer; raises :class:`CxsegError` when none."""
        if self._layer is None or self._layer not in self.viewer.layers:
            raise CxsegError("choose a Labels layer to measure")
        return self._layer

    def image_layer(self):
        """The Image layer whose intensities are measured, or ``None``."""
        name = self.image_combo.currentText()
        if name == NO_IMAGE or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]

    def _image_on_grid(self, labels: Any) -> np.ndarray | None:
        layer = self.image_layer()
        if layer is None:
            return None
        return image_on_grid(layer, labels, non_finite="keep")  # NaN/Inf: skipped, and said

    # ------------------------------------------------------------------ measuring
    def schedule(self, event: Any = None) -> None:
        """Measure again soon (edits arrive in bursts while painting)."""
        self.timer.start()

    def refresh(self) -> None:
        """Measure every class in a worker, then fill the table."""
        self.timer.stop()
        if self._layer is None:
            self.rows = []
            self._fill()
            return
        try:
            layer = self.labels_layer()
            image = self._image_on_grid(layer)
            geom = geometry_from_layer_meta(layer_state(layer), layer.ndim)
            labels = np.array(layer.data, copy=True)
            classes = layer_classes(layer)
        except Exception as exc:
            self._fail("Statistics", exc)
            return
        self.status.setText("Measuring...")

        def done(rows: list[dict]) -> None:
            if layer is self._layer:
                self.rows = rows
                self._ndim = labels.ndim
                self._image = image
                self._labels = labels
                self._fill()
                img = self.image_layer()
                skipped = sum(int(r.get("non_finite", 0)) for r in rows)
                self.status.setText(
                    f"{len(rows)} classes in '{layer.name}'"
                    + (
                        f", intensities of '{img.name}'"
                        if img is not None and image is not None
                        else ""
                    )
                    + (
                        f" ({skipped} NaN/Inf voxels in the classes skipped)" if skipped else ""
                    )
                )
                self.refreshed.emit()

        self.job.submit(_measure, labels, image, geom.affine, classes, on_done=done)

    def _fill(self) -> None:
        selected = self.selected_label()
        cols = display_columns(self._ndim)
        self.table.blockSignals(True)
        self.table.clear()
        self.table.setColumnCount(len(cols))
        self.table.setHorizontalHeaderLabels([c[0] for c in cols])
        self.table.setRowCount(len(self.rows))
        for r, row in enumerate(self.rows):
            for c, (_, key) in enumerate(cols):
                item = QTableWidgetItem(cell_text(row, key))
                item.setData(Qt.ItemDataRole.UserRole, row["label"])
                if c > 0 and key not in ("bbox", "centroid"):
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                self.table.setItem(r, c, item)
        self.table.blockSignals(False)
        labels = [row["label"] for row in self.rows]
        if selected in labels:
            self.table.selectRow(labels.index(selected))
        elif labels:
            self.table.selectRow(0)
        else:
            self.histogram.clear("no classes")

    def selected_label(self) -> int | None:
        """The class of the selected row."""
        rows = {i.row() for i in self.table.selectedIndexes()}
        if not rows:
            return None
        item = self.table.item(min(rows), 0)
        return int(item.data(Qt.ItemDataRole.UserRole)) if item is not None else None

    def show_histogram(self) -> None:
        """Draw the intensity histogram of the selected class (in a worker)."""
        label = self.selected_label()
        image = getattr(self, "_image", None)
        if label is None or image is None:
            self.histogram.clear("choose an Image to see intensities" if image is None else "")
            return
        layer = self._layer
        colour = layer_classes(layer, [label]).get(label) if layer is not None else None
        name = next((r["name"] for r in self.rows if r["label"] == label), str(label))

        def done(result: tuple[np.ndarray, np.ndarray]) -> None:
            counts, edges = result
            self.histogram.set_histogram(
                counts, edges, colour.colour if colour else "#4363d8", name
            )
            self.histogram_shown.emit(label)

        self.hist_job.submit(_histogram, image, self._labels, label, on_done=done)

    # ------------------------------------------------------------------ export
    def export_csv(self, path: str | Path) -> Path:
        """Write the current rows (measured now if there are none) to a CSV file."""
        from ..editing.statistics import label_statistics, statistics_to_csv

        rows = self.rows
        if not rows:
            layer = self.labels_layer()
            geom = geometry_from_layer_meta(layer_state(layer), layer.ndim)
            rows = label_statistics(
                np.asarray(layer.data),
                self._image_on_grid(layer),
                affine=geom.affine,
                classes=layer_classes(layer),
            )
        out = statistics_to_csv(rows, path)
        self.status.setText(f"Saved {out}")
        return out

    def _on_export(self) -> None:
        name = self._layer.name if self._layer is not None else "labels"
        path, _ = QFileDialog.getSaveFileName(
            self, "Export statistics", f"{name}_statistics.csv", "CSV (*.csv)"
        )
        if path:
            try:
                self.export_csv(path)
            except Exception as exc:
                self._fail(f"Exporting statistics to {path}", exc)

    def _fail(self, context: str, exc: BaseException) -> None:
        notify_error(exc, context)
        self.status.setText(f"{context}: {exc}")
