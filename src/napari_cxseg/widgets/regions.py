"""Regions dock widget: the Chest ImaGenome regions and the cardiothoracic ratio of a radiograph.

The button runs :func:`napari_cxseg.anatomy.region_graph.radiograph_regions` (the same pipeline
as ``napari-cxseg regions``) in a napari generator worker with progress and Cancel, on the
chosen radiograph, with models, or from a Labels layer the user has (a corrected segmentation).
Results: an editable Shapes layer of boxes (the scene-graph layer the Chest ImaGenome writer
saves) and a Shapes layer with the CTR's heart and thorax lines. The box table compares the boxes
as drawn now with reference boxes (a scene graph or a gold-standard CSV), IoU per region.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ._alive import enable_if_alive
from ._jobs import create_job, start_worker
from ._layers import fill_combo, image_from_layer, label_map_from_layer

if TYPE_CHECKING:
    import napari

AUTO = "auto (cxr-anatomy if its weights are here, else cxr-lungs + cxr-anatomy-demo)"
FROM_MODELS = "run the models"


def _structures_job(image: Any, label_map: Any) -> Any:
    """Regions from a Labels layer's classes (no model); a generator like the model job."""
    from ..anatomy.region_graph import RegionResult, pixel_spacing_mm, regions_scene_graph
    from ..anatomy.regions import compute_regions
    from ..anatomy.structures import masks_from_label_map

    yield 0, 1, "regions"
    s = masks_from_label_map(label_map)
    if "right lung" not in s or "left lung" not in s:
        raise ValueError(f"'{label_map.meta.get('name')}' has no classes named right lung and left lung")
    rs = compute_regions(s, image.spatial_shape)
    if rs.ctr is not None:
        rs.ctr.column_spacing_mm = pixel_spacing_mm(image)
    name = f"labels:{label_map.meta.get('name') or 'layer'}"
    return RegionResult(rs, regions_scene_graph(rs, image, models=[name]), [], [name])


def _compare_job(layer_data: Any, state: dict, ref_path: str) -> Any:
    from ..anatomy.boxes import evaluate_boxes, normalise_id, read_boxes
    from ..anatomy.scene_graph_layer import scene_graph_from_layer

    sg = scene_graph_from_layer(layer_data, state)
    pred = {normalise_id(sg.image_id): {o.bbox_name: o.original_box for o in sg.objects}}
    return evaluate_boxes(pred, read_boxes(ref_path))


class RegionsWidget(QWidget):
    """Pick a radiograph, press Compute regions, get boxes + CTR lines; compare with references."""

    #: emitted with (regions layer, CTR layer or None) when a run finished
    finished_layers = Signal(object, object)
    #: emitted with the error message when a run or a comparison fails
    failed = Signal(str)
    #: emitted with the BoxReport of a comparison
    compared = Signal(object)

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._worker = None
        self._job: dict[str, Any] = {}
        self.result = None
        self.report = None

        self.image_combo = QComboBox()
        self.source_combo = QComboBox()
        self.model_combo = QComboBox()
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.show_masks = QCheckBox("add the models' segmentations (correct them, then recompute from the layer)")
        self.show_masks.setChecked(True)
        self.run_btn = QPushButton("Compute regions")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.ctr_label = QLabel("CTR: -")
        self.regions_combo = QComboBox()
        self.ref_edit = QLineEdit()
        self.ref_edit.setPlaceholderText("reference scene graph (.json) or gold box CSV")
        self.ref_btn = QPushButton("...")
        self.compare_btn = QPushButton("Compare boxes")
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["region", "IoU", "status"])

        form = QFormLayout()
        form.addRow("Radiograph", self.image_combo)
        form.addRow("Structures", self.source_combo)
        form.addRow("Models", self.model_combo)
        form.addRow("Device", self.device_combo)
        form.addRow(self.show_masks)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_btn)
        buttons.addWidget(self.cancel_btn)
        ref_row = QHBoxLayout()
        ref_row.addWidget(self.ref_edit)
        ref_row.addWidget(self.ref_btn)
        cmp_form = QFormLayout()
        cmp_form.addRow("Boxes", self.regions_combo)
        cmp_form.addRow("Reference", ref_row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.ctr_label)
        layout.addLayout(cmp_form)
        layout.addWidget(self.compare_btn)
        layout.addWidget(self.table)

        self.run_btn.clicked.connect(self.run)
        self.cancel_btn.clicked.connect(self.cancel)
        self.ref_btn.clicked.connect(self._choose_reference)
        self.compare_btn.clicked.connect(self.compare)
        self.source_combo.currentTextChanged.connect(self._on_source)
        for ev in ("inserted", "removed", "reordered"):
            getattr(self.viewer.layers.events, ev).connect(self._refresh)
        self._fill_models()
        self._refresh()

    # ------------------------------------------------------------------ choices
    def _fill_models(self) -> None:
        from ..models.cards import list_cards

        self.model_combo.addItem(AUTO)
        try:
            for c in list_cards([]):
                if c.spatial_dims == 2 and "XR" in c.modality and c.name != "cxr-clicks":
                    self.model_combo.addItem(c.name)
        except Exception as exc:  # a broken card must not kill the widget
            self.status.setText(f"Reading model cards failed: {exc}")

    def _refresh(self, event: Any = None) -> None:
        from napari.layers import Image as ImageLayer
        from napari.layers import Labels, Shapes

        from ..anatomy.scene_graph_layer import is_scene_graph_meta

        images = [ly.name for ly in self.viewer.layers if isinstance(ly, ImageLayer) and ly.ndim == 2]
        fill_combo(self.image_combo, images, prefer=len(images) - 1)
        labels = [ly.name for ly in self.viewer.layers if isinstance(ly, Labels) and ly.ndim == 2]
        fill_combo(self.source_combo, [FROM_MODELS, *labels], prefer=FROM_MODELS)
        boxes = [ly.name for ly in self.viewer.layers if isinstance(ly, Shapes) and is_scene_graph_meta(ly.metadata)]
        fill_combo(self.regions_combo, boxes, prefer=len(boxes) - 1)

    def _on_source(self, text: str) -> None:
        self.model_combo.setEnabled(text == FROM_MODELS)
        self.show_masks.setEnabled(text == FROM_MODELS)

    def _choose_reference(self) -> None:  # pragma: no cover - needs a human
        path, _ = QFileDialog.getOpenFileName(self, "Reference boxes", "", "Scene graph or CSV (*.json *.csv *.zip)")
        if path:
            self.ref_edit.setText(path)

    # ------------------------------------------------------------------ run
    def run(self) -> None:
        """Compute the regions of the chosen radiograph in a worker."""

        from ..anatomy.region_graph import radiograph_regions

        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            self._fail("Choose a radiograph (a 2D image layer) first.")
            return
        if self._worker is not None:
            self.status.setText("Regions are still being computed.")
            return
        source = self.source_combo.currentText()
        try:
            image = image_from_layer(self.viewer, self.viewer.layers[name])
            if source != FROM_MODELS:
                lm = label_map_from_layer(self.viewer.layers[source])
                lm.meta["name"] = source
                if lm.array.shape != image.spatial_shape:
                    raise ValueError(f"'{source}' {lm.array.shape} is not on the grid of '{name}' {image.spatial_shape}")
                worker = create_job(_structures_job, image, lm, _ignore_errors=True)
            else:
                model = self.model_combo.currentText()
                models = None if model == AUTO else [model]
                worker = create_job(radiograph_regions, image, models, self.device_combo.currentText(),
                                       False, lambda: bool(self._worker and self._worker.abort_requested),
                                       _ignore_errors=True)
        except Exception as exc:
            self._fail(f"Cannot compute the regions of '{name}': {exc}")
            return
        self._job = {"image_layer": name, "image": image, "source": source}
        self.run_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText(f"Computing the regions of '{name}'...")
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_result)
        worker.errored.connect(self._on_error)
        worker.aborted.connect(lambda: self.status.setText("Cancelled; no layer was added."))
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()

    def cancel(self) -> None:
        """Stop the running job at its next step."""
        if self._worker is not None:
            self.status.setText("Cancelling...")
            self._worker.quit()

    def _on_progress(self, step: Any) -> None:
        done, total, what = step
        self.progress.setRange(0, max(int(total), 1))
        self.progress.setValue(int(done))
        self.status.setText(f"'{self._job.get('image_layer')}': {what}...")

    def _on_result(self, result: Any) -> None:
        from ..anatomy.region_graph import ctr_layer_data, regions_layer_data

        if result is None:
            return
        name = self._job["image_layer"]
        image = self._job["image"]
        try:
            if self.show_masks.isChecked() and self._job.get("source") == FROM_MODELS:
                from ..layers import labels_layer_data

                for lm in result.label_maps:
                    d, kwl, _ = labels_layer_data(lm, name=self._unique(f"{name} [{lm.meta.get('model')}]"))
                    self.viewer.add_labels(d, **kwl)
            data, kw, _ = regions_layer_data(result.scene_graph, image, reference=name)
            kw["name"] = self._unique(f"{name} regions")
            boxes = self.viewer.add_shapes(data, **kw)
            ctr_layer = None
            lines = ctr_layer_data(result.regions, image.geometry, name=self._unique(f"{name} CTR"))
            if lines is not None:
                ctr_layer = self.viewer.add_shapes(lines[0], **lines[1])
        except Exception as exc:
            self._fail(f"Showing the regions of '{name}' failed: {exc}")
            return
        self.result = result
        rs = result.regions
        self.ctr_label.setText(rs.ctr.describe() if rs.ctr is not None else "CTR: not computed (needs heart and both lungs)")
        left = ", ".join(rs.left_out)
        self.status.setText(f"{len(rs.regions)} regions from {', '.join(result.models)} on '{name}'. "
                            f"Left out: {left or 'none'}. Boxes are editable; save the layer as "
                            f"<dicom_id>_SceneGraph.json.")
        self.viewer.layers.selection.active = boxes
        self._refresh()
        self.regions_combo.setCurrentText(boxes.name)
        self.finished_layers.emit(boxes, ctr_layer)

    def _unique(self, base: str) -> str:
        names = {ly.name for ly in self.viewer.layers}
        if base not in names:
            return base
        i = 2
        while f"{base} [{i}]" in names:
            i += 1
        return f"{base} [{i}]"

    def _on_error(self, exc: BaseException) -> None:
        what = self._job.get("image_layer", "?")
        self._fail(f"Computing the regions of '{what}' failed: {exc}")

    def _on_finished(self) -> None:
        self._worker = None
        try:
            self.run_btn.setEnabled(True)
            self.cancel_btn.setEnabled(False)
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
        except RuntimeError:  # the dock was closed while the job ran
            pass

    # ------------------------------------------------------------------ compare
    def compare(self) -> None:
        """IoU per region of the chosen boxes layer against the reference file (in a worker)."""
        name, ref = self.regions_combo.currentText(), self.ref_edit.text().strip()
        if not name or name not in self.viewer.layers:
            self._fail("Compute or open region boxes first.")
            return
        if not ref:
            self._fail("Choose a reference scene graph or gold-standard box CSV.")
            return
        layer = self.viewer.layers[name]
        _, state, _ = layer.as_layer_data_tuple()
        self.compare_btn.setEnabled(False)
        self.status.setText(f"Comparing '{name}' with {ref}...")
        start_worker(_compare_job, [list(map(list, d)) for d in layer.data], state, ref,
                     on_done=self._on_report, on_error=lambda e: self._fail(f"Comparing '{name}' with {ref} failed: {e}"),
                     on_finished=lambda: enable_if_alive(self.compare_btn))

    def _on_report(self, report: Any) -> None:
        self.report = report
        rows = report.rows
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            iou = "" if r["iou"] is None else f"{r['iou']:.3f}"
            for j, v in enumerate((r["bbox_name"], iou, r["status"])):
                self.table.setItem(i, j, QTableWidgetItem(v))
        both = [r["iou"] for r in rows if r["iou"] is not None]
        mean = sum(both) / len(both) if both else float("nan")
        self.status.setText(f"{len(both)} regions on both sides, mean IoU {mean:.3f}.")
        self.compared.emit(report)

    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(message)
        show_error(message)
        self.failed.emit(message)
