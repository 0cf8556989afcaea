"""Correct-widget panels for the effects that need only the label array.

Each panel collects parameters and calls ``host.run_tool`` (see :class:`CorrectWidget`); the
work is done by :mod:`napari_cxseg.editing` in a worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..images import CxsegError
from ._jobs import ToolResult
from ._layers import check_same_grid
from ._preview import layer_classes, present_ids, slicing_axis, user_labels_layers

if TYPE_CHECKING:
    from .correct import CorrectWidget

CURRENT_AXIS = "current slicing axis"
THIS_LAYER = "(this layer)"


def mm_spin(value: float, low: float, high: float, suffix: str = " mm") -> QDoubleSpinBox:
    """A spin box for a length in mm."""
    spin = QDoubleSpinBox()
    spin.setRange(low, high)
    spin.setDecimals(2)
    spin.setSingleStep(0.5)
    spin.setValue(value)
    spin.setSuffix(suffix)
    return spin


def compact_combo() -> QComboBox:
    """A combo box whose width does not follow its longest item (docks stay narrow)."""
    combo = QComboBox()
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(8)
    return combo


def wrapped_label(text: str) -> QLabel:
    """A word-wrapped label that never widens its panel."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    label.setMinimumHeight(label.fontMetrics().height() * 3)
    return label


class Panel(QWidget):
    """Base of the effect panels: a form and an Apply button."""

    tool = "Effect"

    def __init__(self, host: CorrectWidget, button_below: bool = True):
        super().__init__()
        self.host = host
        self.form = QFormLayout()
        self.apply_btn = QPushButton("Apply")
        self.apply_btn.setToolTip("Apply to the layer as one undoable step (Ctrl+Z undoes it)")
        self.apply_btn.clicked.connect(self.apply)
        layout = QVBoxLayout(self)
        layout.addLayout(self.form)
        if button_below:
            layout.addWidget(self.apply_btn)
        layout.addStretch(1)

    def apply(self) -> bool:
        """Run the effect on the target layer; False when it could not start."""
        return self.host.run_tool(self.tool, self.prepare)

    def prepare(self) -> Callable[[np.ndarray], ToolResult | np.ndarray]:
        """Read the inputs (main thread) and return the worker's computation."""
        raise CxsegError(f"{type(self).__name__} defines no effect")


class FillBetweenPanel(Panel):
    """3D Slicer's "Fill between slices": interpolate the class between drawn slices."""

    tool = "Fill between slices"

    def __init__(self, host: CorrectWidget):
        super().__init__(host)
        self.axis_combo = compact_combo()
        self.axis_combo.addItems([CURRENT_AXIS, "axis 0", "axis 1", "axis 2"])
        self.info = wrapped_label(
            "Draw the class on a few slices, then Apply: the slices between are filled."
        )
        self.info.setToolTip("Shape-based interpolation; only background voxels are filled")
        self.form.addRow(self.info)
        self.form.addRow("Slice axis", self.axis_combo)

    def axis(self) -> int:
        """The data axis to interpolate along."""
        layer = self.host.labels_layer()
        if layer.ndim < 3:
            raise CxsegError("fill between slices needs a 3D labels layer")
        text = self.axis_combo.currentText()
        if text == CURRENT_AXIS:
            axis = slicing_axis(self.host.viewer, layer)
            if axis is None:
                raise CxsegError("switch to the 2D view or pick a slice axis explicitly")
            return axis
        axis = int(text.split()[-1])
        if axis >= layer.ndim:
            raise CxsegError(f"axis {axis} does not exist in a {layer.ndim}D layer")
        return axis

    def prepare(self):
        from ..editing.interpolate import interpolate_slices

        label = self.host.current_label()
        axis = self.axis()
        spacing = self.host.spacing()
        return lambda arr: interpolate_slices(arr, label, axis=axis, spacing=spacing)


ISLAND_OPS = ("Keep largest island", "Remove small islands", "Split islands into classes")


class IslandsPanel(Panel):
    """3D Slicer's "Islands": keep the largest, remove small ones, or split into classes."""

    tool = "Islands"

    def __init__(self, host: CorrectWidget):
        super().__init__(host)
        self.op_combo = compact_combo()
        self.op_combo.addItems(ISLAND_OPS)
        self.min_size = QDoubleSpinBox()
        self.min_size.setRange(0.0, 1e9)
        self.min_size.setDecimals(1)
        self.min_size.setValue(100.0)
        self.all_classes = QCheckBox("all classes (not only the selected one)")
        self.full_conn = QCheckBox("diagonal neighbours connect (8 / 26)")
        self.form.addRow("Operation", self.op_combo)
        self.form.addRow("Smaller than", self.min_size)
        self.form.addRow(self.all_classes)
        self.form.addRow(self.full_conn)
        self.op_combo.currentIndexChanged.connect(self._update_enabled)
        host.layer_changed.connect(self._update_units)
        self._update_enabled()

    def _update_enabled(self) -> None:
        op = self.op_combo.currentText()
        self.min_size.setEnabled(op == ISLAND_OPS[1])
        self.all_classes.setEnabled(op != ISLAND_OPS[2])

    def _update_units(self) -> None:
        layer = self.host._layer
        self.min_size.setSuffix(" mm²" if layer is not None and layer.ndim == 2 else " mm³")

    def prepare(self):
        from ..editing import islands

        layer = self.host.labels_layer()
        op = self.op_combo.currentText()
        conn = layer.ndim if self.full_conn.isChecked() else 1
        every = self.all_classes.isChecked() and op != ISLAND_OPS[2]
        label = None if every else self.host.current_label()
        if op == ISLAND_OPS[0]:
            return lambda arr: islands.keep_largest(arr, label, connectivity=conn)
        if op == ISLAND_OPS[1]:
            size, spacing = float(self.min_size.value()), self.host.spacing()
            return lambda arr: islands.remove_small(arr, size, spacing, label, connectivity=conn)
        classes = layer_classes(layer, [label, *present_ids(layer.data)])

        def split(arr: np.ndarray) -> ToolResult:
            from ..editing.classes import add_class

            out, new_ids = islands.split_islands(arr, label, connectivity=conn)
            new_classes = dict(classes)
            for i, cid in enumerate(new_ids):
                new_classes, _ = add_class(
                    new_classes, f"{classes[label].name} ({i + 2})", class_id=cid
                )
            return ToolResult(out, new_classes, f"Split into {len(new_ids) + 1} classes")

        return split


SMOOTHING_METHODS = ("median", "opening", "closing", "gaussian")


class SmoothingPanel(Panel):
    """3D Slicer's "Smoothing": median, opening, closing or Gaussian with a kernel in mm."""

    tool = "Smoothing"

    def __init__(self, host: CorrectWidget):
        super().__init__(host)
        self.method_combo = compact_combo()
        self.method_combo.addItems(SMOOTHING_METHODS)
        self.method_combo.setItemData(0, "Remove spurs and fill notches (keeps the volume)")
        self.method_combo.setItemData(1, "Remove protrusions and thin islands")
        self.method_combo.setItemData(2, "Fill gaps and holes")
        self.method_combo.setItemData(3, "Round corners")
        self.kernel = mm_spin(3.0, 0.1, 200.0)
        self.overwrite = QCheckBox("added voxels may take other classes")
        self.form.addRow("Method", self.method_combo)
        self.form.addRow("Kernel", self.kernel)
        self.form.addRow(self.overwrite)

    def prepare(self):
        from ..editing.smoothing import smooth

        label = self.host.current_label()
        method, kernel = self.method_combo.currentText(), float(self.kernel.value())
        spacing, overwrite = self.host.spacing(), self.overwrite.isChecked()
        return lambda arr: smooth(arr, label, method, kernel, spacing, overwrite=overwrite)


class MarginPanel(Panel):
    """3D Slicer's "Margin" (grow / shrink by mm) and "Hollow" (a shell of a thickness)."""

    tool = "Margin"

    def __init__(self, host: CorrectWidget):
        super().__init__(host, button_below=False)
        self.margin_mm = mm_spin(2.0, -200.0, 200.0)
        self.margin_mm.setToolTip("Positive grows the class, negative shrinks it")
        self.overwrite = QCheckBox("growing may take other classes")
        self.thickness = mm_spin(2.0, 0.1, 200.0)
        self.hollow_side = compact_combo()
        self.hollow_side.addItems(["inside the surface", "outside the surface"])
        self.hollow_btn = QPushButton("Hollow")
        self.hollow_btn.setToolTip("Replace the class by a shell (one undoable step)")
        self.hollow_btn.clicked.connect(self.apply_hollow)
        self.apply_btn.setText("Apply margin")
        self.form.addRow("Margin", self.margin_mm)
        self.form.addRow(self.overwrite)
        self.form.addRow(self.apply_btn)
        self.form.addRow(QLabel("Hollow"))
        self.form.addRow("Thickness", self.thickness)
        self.form.addRow("Shell", self.hollow_side)
        self.form.addRow(self.hollow_btn)

    def prepare(self):
        from ..editing.margin import margin

        label = self.host.current_label()
        mm, spacing, overwrite = (
            float(self.margin_mm.value()),
            self.host.spacing(),
            self.overwrite.isChecked(),
        )
        return lambda arr: margin(arr, label, mm, spacing, overwrite=overwrite)

    def apply_hollow(self) -> bool:
        """Run the Hollow effect; False when it could not start."""
        return self.host.run_tool("Hollow", self._prepare_hollow)

    def _prepare_hollow(self):
        from ..editing.margin import hollow

        label = self.host.current_label()
        mm, spacing = float(self.thickness.value()), self.host.spacing()
        inside, overwrite = self.hollow_side.currentIndex() == 0, self.overwrite.isChecked()
        return lambda arr: hollow(arr, label, mm, spacing, inside=inside, overwrite=overwrite)


LOGICAL_OPS = ("union", "subtract", "intersect", "replace")


class LogicalPanel(Panel):
    """3D Slicer's "Logical operators": change the class by another class or layer."""

    tool = "Logical"

    def __init__(self, host: CorrectWidget):
        super().__init__(host)
        self.op_combo = compact_combo()
        self.op_combo.addItems(LOGICAL_OPS)
        self.source_combo = compact_combo()
        self.other_class = QSpinBox()
        self.other_class.setRange(1, 2**31 - 1)
        self.other_class.setToolTip("Class id in the source layer")
        self.overwrite = QCheckBox("added voxels may take other classes")
        self.form.addRow("Operation", self.op_combo)
        self.form.addRow("With layer", self.source_combo)
        self.form.addRow("Class", self.other_class)
        self.form.addRow(self.overwrite)
        for ev in ("inserted", "removed", "reordered"):
            getattr(host.viewer.layers.events, ev).connect(self._refresh_sources)
        self._refresh_sources()

    def _refresh_sources(self, event=None) -> None:
        current = self.source_combo.currentText()
        names = [THIS_LAYER, *(ly.name for ly in user_labels_layers(self.host.viewer))]
        self.source_combo.blockSignals(True)
        self.source_combo.clear()
        self.source_combo.addItems(names)
        if current in names:
            self.source_combo.setCurrentText(current)
        self.source_combo.blockSignals(False)

    def prepare(self):
        from ..editing.logical import combine_classes

        layer = self.host.labels_layer()
        label = self.host.current_label()
        op, other = self.op_combo.currentText(), int(self.other_class.value())
        overwrite = self.overwrite.isChecked()
        src_name = self.source_combo.currentText()
        other_labels = None
        if src_name not in (THIS_LAYER, layer.name):
            if src_name not in self.host.viewer.layers:
                raise CxsegError(f"layer '{src_name}' is no longer open")
            source = self.host.viewer.layers[src_name]
            check_same_grid(source, layer, what="labels")
            other_labels = np.array(source.data, copy=True)
        elif other == label:
            raise CxsegError("choose another class than the selected one")
        return lambda arr: combine_classes(arr, label, other, op, other_labels, overwrite=overwrite)
