"""Correct-widget panels for the effects that read image intensities, with live previews.

Previews are computed in a worker (only the newest request runs) and shown in a scratch
Labels layer over the target; Apply writes to the target layer as one undoable step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QCheckBox, QDoubleSpinBox, QPushButton
from superqt import QLabeledDoubleRangeSlider

from ..images import CxsegError
from ._correct_tools import Panel, compact_combo, mm_spin, wrapped_label
from ._jobs import LatestOnly, ToolResult
from ._preview import current_slice, remove_layer, show_preview

if TYPE_CHECKING:
    from .correct import CorrectWidget

GROW_PREVIEW = "cxseg grow preview"
THRESHOLD_PREVIEW = "cxseg threshold preview"
GROW_METHODS = {"watershed": "watershed", "random walker": "random_walker"}


def _grow(image: np.ndarray, seeds: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Grown labels where the grower reached, the seeds' array elsewhere."""
    from ..editing.grow import grow_from_seeds

    grown = grow_from_seeds(image, seeds, **params)
    return np.where(grown > 0, grown, seeds).astype(seeds.dtype, copy=False)


class GrowPanel(Panel):
    """3D Slicer's "Grow from seeds": paint seeds of 2+ classes, grow them over the image."""

    tool = "Grow from seeds"

    def __init__(self, host: CorrectWidget):
        super().__init__(host)
        self._version = 0
        self._result: tuple[tuple, np.ndarray] | None = None
        self.preview_job = LatestOnly(self)
        self.preview_job.failed.connect(lambda exc: host.report_error("Grow preview", exc))
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(300)
        self.timer.timeout.connect(self.update_preview)

        info = wrapped_label(
            "Paint seeds of 2+ classes (object and surroundings); each grows over the image."
        )
        self.method_combo = compact_combo()
        self.method_combo.addItems(list(GROW_METHODS))
        self.beta = QDoubleSpinBox()
        self.beta.setRange(1.0, 10000.0)
        self.beta.setValue(130.0)
        self.beta.setToolTip("Random walker edge strictness: higher follows edges more closely")
        self.roi = compact_combo()
        self.roi.addItems(["around seeds", "whole image"])
        self.method_combo.setToolTip(
            "watershed: fast (live preview); random walker: smoother, slower"
        )
        self.roi_margin = mm_spin(20.0, 0.0, 500.0)
        self.smoothing = mm_spin(1.0, 0.0, 20.0)
        self.live = QCheckBox("live preview")
        self.preview_btn = QPushButton("Preview")
        self.cancel_btn = QPushButton("Clear preview")
        self.form.addRow(info)
        self.form.addRow("Method", self.method_combo)
        self.form.addRow("Edge strictness", self.beta)
        self.form.addRow("Region", self.roi)
        self.form.addRow("Margin", self.roi_margin)
        self.form.addRow("Smoothing", self.smoothing)
        self.form.addRow(self.live)
        self.form.addRow(self.preview_btn)
        self.form.addRow(self.cancel_btn)

        for w in (self.method_combo, self.roi):
            w.currentIndexChanged.connect(self.on_inputs_changed)
        for w in (self.beta, self.roi_margin, self.smoothing):
            w.valueChanged.connect(self.on_inputs_changed)
        self.live.toggled.connect(self.on_inputs_changed)
        self.preview_btn.clicked.connect(self.update_preview)
        self.cancel_btn.clicked.connect(self.clear_preview)
        host.layer_changed.connect(self._on_layer_changed)
        self._update_enabled()

    def _update_enabled(self) -> None:
        rw = GROW_METHODS[self.method_combo.currentText()] == "random_walker"
        self.beta.setEnabled(rw)
        self.smoothing.setEnabled(not rw)
        self.roi_margin.setEnabled(self.roi.currentIndex() == 0)

    def _on_layer_changed(self) -> None:
        self._version += 1
        self.on_inputs_changed()

    def on_inputs_changed(self, *args: Any) -> None:
        """Parameters, seeds or image changed: refresh the live preview soon."""
        self._update_enabled()
        if self.live.isChecked() and self.host._layer is not None:
            self.timer.start()
        elif self.host._layer is None:
            self.clear_preview()

    def params(self) -> dict[str, Any]:
        """Keyword arguments for :func:`~napari_cxseg.editing.grow.grow_from_seeds`."""
        return {
            "spacing": tuple(self.host.spacing()),
            "method": GROW_METHODS[self.method_combo.currentText()],
            "beta": float(self.beta.value()),
            "roi": "seeds" if self.roi.currentIndex() == 0 else None,
            "roi_margin_mm": float(self.roi_margin.value()),
            "smoothing_mm": float(self.smoothing.value()),
        }

    def _key(self, params: dict[str, Any]) -> tuple:
        return (self._version, self.host.image_combo.currentText(), tuple(sorted(params.items())))

    def update_preview(self) -> None:
        """Compute the grown labels in a worker and show them in the preview layer."""
        self.timer.stop()
        try:
            layer = self.host.labels_layer()
            image = self.host.image_array()
            params = self.params()
        except Exception as exc:
            self.host.report_error("Grow preview", exc)
            return
        key = self._key(params)
        seeds = np.array(layer.data, copy=True)
        self.host.status.setText("Growing preview...")

        def done(result: np.ndarray) -> None:
            self._result = (key, result)
            if layer in self.host.viewer.layers:
                show_preview(self.host.viewer, GROW_PREVIEW, result, like=layer)
                self.host.status.setText("Preview shown; Apply writes it to the layer.")

        self.preview_job.submit(_grow, image, seeds, params, on_done=done)

    def clear_preview(self) -> None:
        """Stop the live preview and remove its layer."""
        self.timer.stop()
        self.preview_job.cancel_pending()
        self.live.setChecked(False)
        self._result = None
        remove_layer(self.host.viewer, GROW_PREVIEW)

    def deactivate(self) -> None:
        """The panel was folded away: drop the preview."""
        self.clear_preview()

    def prepare(self):
        params = self.params()
        key = self._key(params)
        if self._result is not None and self._result[0] == key:
            cached = self._result[1]
            return lambda arr: cached
        image = self.host.image_array()
        return lambda arr: _grow(image, arr, params)

    def apply(self) -> bool:
        """Write the grown labels (the preview's, when still current) to the layer."""
        return self.host.run_tool(
            self.tool, self.prepare, on_applied=lambda r: self.clear_preview()
        )


REGIONS = ("current slice", "whole image", "inside the class")


class ThresholdPanel(Panel):
    """Paint or clip a class within an image intensity range (e.g. HU), with a preview."""

    tool = "Threshold painting"

    def __init__(self, host: CorrectWidget):
        super().__init__(host, button_below=False)
        self.preview_job = LatestOnly(self)
        self.preview_job.failed.connect(lambda exc: host.report_error("Threshold preview", exc))
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(150)
        self.timer.timeout.connect(self.update_preview)

        self.range_slider = QLabeledDoubleRangeSlider()
        self.range_slider.setOrientation(self.range_slider.orientation().Horizontal)
        self.range_slider.setDecimals(1)
        self.range_slider.setRange(0.0, 1.0)
        self.range_slider.setValue((0.5, 1.0))
        self.region = compact_combo()
        self.region.addItems(list(REGIONS))
        self.overwrite = QCheckBox("fill may take other classes")
        self.preview = QCheckBox("preview the range")
        self.preview.setChecked(True)
        self.apply_btn.setText("Fill range with class")
        self.apply_btn.setToolTip("Paint the in-range voxels of the region (one undoable step)")
        self.clip_btn = QPushButton("Clip class to range")
        self.clip_btn.setToolTip(
            "Keep only the class's voxels inside the range (one undoable step)"
        )
        self.form.addRow("Range", self.range_slider)
        self.form.addRow("Region", self.region)
        self.form.addRow(self.overwrite)
        self.form.addRow(self.preview)
        self.form.addRow(self.apply_btn)
        self.form.addRow(self.clip_btn)

        self.range_slider.valueChanged.connect(self._schedule)
        self.region.currentIndexChanged.connect(self._schedule)
        self.preview.toggled.connect(self._on_preview_toggled)
        self.clip_btn.clicked.connect(self.apply_clip)
        host.viewer.dims.events.current_step.connect(self._on_step)

    # ------------------------------------------------------------------ range
    def on_image_changed(self) -> None:
        """Set the slider's limits to the image's intensity range."""
        layer = self.host.image_layer(required=False)
        if layer is None:
            return
        lo, hi = (float(v) for v in layer.contrast_limits_range)  # napari measured it
        if hi <= lo:
            hi = lo + 1.0
        self.range_slider.blockSignals(True)
        self.range_slider.setRange(lo, hi)
        self.range_slider.setValue((lo + (hi - lo) / 2.0, hi))
        self.range_slider.blockSignals(False)

    def set_range(self, low: float, high: float) -> None:
        """Set the intensity range (in the image's units)."""
        self.range_slider.setValue((float(low), float(high)))

    def bounds(self) -> tuple[float, float]:
        """The chosen intensity range, inclusive."""
        low, high = self.range_slider.value()
        return float(low), float(high)

    # ------------------------------------------------------------------ region
    def region_mask(self, layer: Any, labels: np.ndarray | None = None) -> np.ndarray:
        """Boolean mask of the region the effect may touch."""
        region = self.region.currentText()
        if region == REGIONS[2]:
            data = np.asarray(layer.data) if labels is None else labels
            return data == self.host.current_label()
        mask = np.zeros(layer.data.shape, bool)
        sl = current_slice(self.host.viewer, layer) if region == REGIONS[0] else None
        if sl is None and region == REGIONS[0] and layer.ndim >= 3:
            raise CxsegError("'current slice' needs the 2D view; or choose 'whole image'")
        if sl is None:
            mask[...] = True
        else:
            axis, index = sl
            idx = [slice(None)] * layer.ndim
            idx[axis] = index
            mask[tuple(idx)] = True
        return mask

    # ------------------------------------------------------------------ preview
    def _schedule(self, *args: Any) -> None:
        if self.preview.isChecked() and self.host._layer is not None:
            self.timer.start()

    def _on_step(self, event: Any = None) -> None:
        if self.region.currentText() == REGIONS[0] and THRESHOLD_PREVIEW in self.host.viewer.layers:
            self._schedule()

    def _on_preview_toggled(self, on: bool) -> None:
        if on:
            self.timer.start()
        else:
            self.clear_preview()

    def update_preview(self) -> None:
        """Show the in-range voxels of the region in the class colour."""
        self.timer.stop()
        try:
            layer = self.host.labels_layer()
            image = self.host.image_array()
            label = self.host.current_label()
            region = self.region_mask(layer)
        except Exception as exc:
            self.host.report_error("Threshold preview", exc)
            return
        low, high = self.bounds()
        dtype = layer.data.dtype

        def compute() -> np.ndarray:
            from ..editing.logical import threshold_mask

            return ((threshold_mask(image, low, high) & region) * label).astype(dtype)

        def done(result: np.ndarray) -> None:
            if layer in self.host.viewer.layers and self.preview.isChecked():
                show_preview(self.host.viewer, THRESHOLD_PREVIEW, result, like=layer)

        self.preview_job.submit(compute, on_done=done)

    def clear_preview(self) -> None:
        """Remove the preview layer."""
        self.timer.stop()
        self.preview_job.cancel_pending()
        remove_layer(self.host.viewer, THRESHOLD_PREVIEW)

    def deactivate(self) -> None:
        """The panel was folded away: drop the preview."""
        self.clear_preview()

    # ------------------------------------------------------------------ effects
    def prepare(self):
        from ..editing.logical import paint_in_range

        layer = self.host.labels_layer()
        image = self.host.image_array()
        label = self.host.current_label()
        region = self.region_mask(layer)
        low, high = self.bounds()
        keep_other = not self.overwrite.isChecked()
        return lambda arr: paint_in_range(arr, region, label, image, low, high, keep_other)

    def apply_clip(self) -> bool:
        """Remove the class's voxels outside the range (within the region)."""
        return self.host.run_tool("Threshold clip", self._prepare_clip)

    def _prepare_clip(self):
        from ..editing.logical import threshold_mask

        layer = self.host.labels_layer()
        image = self.host.image_array()
        label = self.host.current_label()
        region = self.region_mask(layer)
        low, high = self.bounds()

        def clip(arr: np.ndarray) -> ToolResult:
            out = arr.copy()
            out[(arr == label) & region & ~threshold_mask(image, low, high)] = 0
            return ToolResult(out)

        return clip
