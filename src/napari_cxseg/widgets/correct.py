"""Correct dock widget: 3D Slicer Segment Editor-style effects on a napari Labels layer.

Every effect computes in a worker on a copy of the layer and writes its result back as ONE
undoable step (Ctrl+Z in napari restores the array exactly). The effects themselves live in
:mod:`napari_cxseg.editing`; the panels in :mod:`._correct_tools`, :mod:`._correct_image_tools`
and :mod:`._class_table` only collect parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QFormLayout,
    QLabel,
    QToolBox,
    QVBoxLayout,
    QWidget,
)

from ..images import CxsegError
from ._class_table import ClassesPanel
from ._correct_image_tools import GrowPanel, ThresholdPanel
from ._correct_tools import (
    FillBetweenPanel,
    IslandsPanel,
    LogicalPanel,
    MarginPanel,
    SmoothingPanel,
    compact_combo,
)
from ._jobs import LayerEditRunner, ToolResult
from ._layers import fill_combo, image_on_grid
from ._preview import image_layers, layer_classes, layer_spacing, user_labels_layers

if TYPE_CHECKING:
    import napari

NO_IMAGE = "(none)"


class CorrectWidget(QWidget):
    """Correction effects on the chosen Labels layer, each one undoable step.

    Parameters
    ----------
    napari_viewer
        The viewer (injected by napari).
    """

    #: ``(tool, voxels changed)`` after an effect was written to the layer
    applied = Signal(str, int)
    #: the message of a failed effect
    failed = Signal(str)
    #: emitted when the target layer changed (switched, painted, or edited by a tool)
    layer_changed = Signal()

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._layer = None
        self._image_name: str | None = None
        self.runner = LayerEditRunner(napari_viewer, self)
        self.runner.applied.connect(self.applied)
        self.runner.failed.connect(self.failed)

        self.labels_combo = compact_combo()
        self.image_combo = compact_combo()
        self.class_combo = compact_combo()
        self.class_combo.setToolTip("The class the effects act on (the layer's selected label).")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.runner.message.connect(self.status.setText)

        form = QFormLayout()
        form.addRow("Labels", self.labels_combo)
        form.addRow("Image", self.image_combo)
        form.addRow("Class", self.class_combo)

        self.fill_panel = FillBetweenPanel(self)
        self.grow_panel = GrowPanel(self)
        self.islands_panel = IslandsPanel(self)
        self.smoothing_panel = SmoothingPanel(self)
        self.margin_panel = MarginPanel(self)
        self.logical_panel = LogicalPanel(self)
        self.threshold_panel = ThresholdPanel(self)
        self.classes_panel = ClassesPanel(self)
        self.toolbox = QToolBox()
        for panel, title in (
            (self.classes_panel, "Classes"),
            (self.fill_panel, "Fill between slices"),
            (self.grow_panel, "Grow from seeds"),
            (self.threshold_panel, "Threshold painting"),
            (self.islands_panel, "Islands"),
            (self.smoothing_panel, "Smoothing"),
            (self.margin_panel, "Margin / Hollow"),
            (self.logical_panel, "Logical operators"),
        ):
            self.toolbox.addItem(panel, title)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.toolbox, 1)
        layout.addWidget(self.status)

        self.labels_combo.currentTextChanged.connect(self._on_target_changed)
        self.image_combo.currentTextChanged.connect(lambda _: self.image_changed())
        self.class_combo.activated.connect(self._on_class_chosen)
        self.toolbox.currentChanged.connect(self._on_page_changed)
        for ev in ("inserted", "removed", "reordered"):
            getattr(self.viewer.layers.events, ev).connect(self._refresh_layers)
        self.viewer.layers.selection.events.active.connect(self._on_active_layer)
        self._refresh_layers()

        from .autosave import Autosaver

        self.autosaver = Autosaver.for_viewer(self.viewer)

    # ------------------------------------------------------------------ layers
    def _refresh_layers(self, event: Any = None) -> None:
        labels = [ly.name for ly in user_labels_layers(self.viewer)]
        fill_combo(self.labels_combo, labels, prefer=self._preferred_labels(labels))
        images = [NO_IMAGE, *(ly.name for ly in image_layers(self.viewer))]
        fill_combo(self.image_combo, images, prefer=images[-1] if len(images) > 1 else NO_IMAGE)
        self._on_target_changed(self.labels_combo.currentText())
        if self.image_combo.currentText() != self._image_name:
            self.image_changed()

    def _preferred_labels(self, names: list[str]) -> str | None:
        active = self.viewer.layers.selection.active
        if active is not None and active.name in names:
            return active.name
        return names[-1] if names else None

    def _on_active_layer(self, event: Any) -> None:
        layer = event.value
        if layer is not None and self.labels_combo.findText(layer.name) >= 0:
            self.labels_combo.setCurrentText(layer.name)

    def _on_target_changed(self, name: str) -> None:
        layer = self.viewer.layers[name] if name and name in self.viewer.layers else None
        if layer is self._layer:
            return
        if self._layer is not None:
            for ev in (self._layer.events.paint, self._layer.events.data):
                ev.disconnect(self._emit_changed)
            self._layer.events.selected_label.disconnect(self._sync_class_combo)
            self._layer.events.features.disconnect(self._sync_class_combo)
        self._layer = layer
        if layer is not None:
            for ev in (layer.events.paint, layer.events.data):
                ev.connect(self._emit_changed)
            layer.events.selected_label.connect(self._sync_class_combo)
            layer.events.features.connect(self._sync_class_combo)
        self._sync_class_combo()
        self.layer_changed.emit()

    def _emit_changed(self, event: Any = None) -> None:
        self.layer_changed.emit()

    def image_changed(self) -> None:
        """Tell the panels that read intensities that the image changed."""
        self._image_name = self.image_combo.currentText()
        self.threshold_panel.on_image_changed()
        self.grow_panel.on_inputs_changed()

    def _on_page_changed(self, index: int) -> None:
        current = self.toolbox.widget(index)
        for i in range(self.toolbox.count()):
            panel = self.toolbox.widget(i)
            if panel is not current and hasattr(panel, "deactivate"):
                panel.deactivate()

    # ------------------------------------------------------------------ class selection
    def _sync_class_combo(self, event: Any = None) -> None:
        layer = self._layer
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        if layer is not None:
            selected = int(layer.selected_label)
            classes = layer_classes(layer, [selected] if selected else [])
            for k, c in classes.items():
                self.class_combo.addItem(f"{k}: {c.name}", k)
            idx = self.class_combo.findData(selected)
            if idx >= 0:
                self.class_combo.setCurrentIndex(idx)
        self.class_combo.blockSignals(False)

    def _on_class_chosen(self, index: int) -> None:
        if self._layer is not None and index >= 0:
            self._layer.selected_label = int(self.class_combo.itemData(index))

    # ------------------------------------------------------------------ for the panels
    def labels_layer(self):
        """The target Labels layer; raises :class:`CxsegError` when none is chosen."""
        if self._layer is None or self._layer not in self.viewer.layers:
            raise CxsegError("choose a Labels layer to correct (Labels combo)")
        return self._layer

    def image_layer(self, required: bool = True):
        """The chosen Image layer (on the labels' grid), or ``None`` when not required."""
        name = self.image_combo.currentText()
        if not name or name == NO_IMAGE or name not in self.viewer.layers:
            if required:
                raise CxsegError("this effect reads intensities: choose an Image layer")
            return None
        return self.viewer.layers[name]

    def image_array(self, required: bool = True) -> np.ndarray | None:
        """The chosen image's data, checked to lie on the target labels' grid."""
        layer = self.image_layer(required)
        if layer is None:
            return None
        return image_on_grid(layer, self.labels_layer())

    def current_label(self) -> int:
        """The class the effects act on (> 0)."""
        label = int(self.labels_layer().selected_label)
        if label == 0:
            raise CxsegError("the selected class is the background (0): choose a class")
        return label

    def spacing(self) -> np.ndarray:
        """Voxel size in mm per axis of the target layer."""
        return layer_spacing(self.labels_layer())

    def run_tool(
        self,
        tool: str,
        prepare: Callable[[], Callable[[np.ndarray], ToolResult | np.ndarray]],
        on_applied: Callable[[ToolResult], None] | None = None,
    ) -> bool:
        """Start effect ``tool``: ``prepare()`` reads the inputs (main thread) and returns the
        function that computes the new array from a copy of the layer's data (worker).

        Returns
        -------
        bool
            Whether the effect started (input errors are reported and return False).
        """
        try:
            layer = self.labels_layer()
            compute = prepare()
        except Exception as exc:
            self.report_error(tool, exc)
            return False
        return self.runner.run(layer, tool, compute, on_applied)

    def report_error(self, tool: str, exc: BaseException) -> None:
        """Show a failure as a notification naming the layer and the effect."""
        from ._layers import notify_error

        name = self._layer.name if self._layer is not None else "no layer"
        notify_error(exc, f"{tool} on '{name}'")
        self.status.setText(f"{tool} on '{name}': {exc}")
        self.failed.emit(f"{tool} on '{name}': {exc}")
