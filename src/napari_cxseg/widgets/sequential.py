"""Sequential exams: a current and a prior exam of one patient, side by side and registered.

Side by side uses napari's grid mode in one viewer (stride 2: each film with its boxes in one
cell, prior on the left, current on the right). One viewer keeps one layer list, one camera
(both exams pan and zoom together) and lets the findings panel and the writer work on either
exam unchanged; two viewers would need their cameras, docks and selections kept in step by hand.
Selecting a region in one exam selects the region of the same name in the other. The current
exam's boxes show the report's comparison (improved / worsened / no change) against this prior,
from its scene graph or from a gold comparison file. "Register" runs a SimpleITK affine
registration in a thread worker and adds the prior resampled onto the current grid (and the
prior's boxes mapped onto it) for overlay; the table lists per region the box area in both
exams and, when the lungs are segmented, the lung area per side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..anatomy.registration import transform_boxes
from ..anatomy.scene_graph_compare import comparisons_for, read_gold_comparisons
from . import _sequential_model as sm
from ._findings_layers import (
    radiograph_layers,
    region_names,
    scene_graph_layers,
    scene_graph_of,
    select_regions,
    selected_region_names,
    set_comparisons,
)
from ._jobs import create_job
from ._layers import add_label_map, fill_combo, image_from_layer, notify_error

NONE = "(none)"
TABLE_COLUMNS = ("region", "report vs prior", "prior", "current", "change %")


class SequentialWidget(QWidget):
    """Dock widget comparing a current and a prior exam (scene graphs + films)."""

    def __init__(self, napari_viewer: Any):
        super().__init__()
        self.viewer = napari_viewer
        self._linked: list[Any] = []
        self._syncing = False
        self._worker: Any = None
        self._hidden: list[Any] = []
        self.gold: list = []
        self.result: Any = None
        self.rows: list = []
        self.combos = {k: QComboBox() for k in ("current", "current film", "current lungs",
                                                 "prior", "prior film", "prior lungs")}  # fmt: skip
        self.side_by_side = QCheckBox("side by side (grid)")
        self.overlay = QCheckBox("overlay registered prior")
        self.register_button = QPushButton("Register prior to current")
        self.lungs_button = QPushButton("Segment lungs (cxr-lungs)")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.gold_path = QLineEdit()
        self.gold_path.setPlaceholderText("gold_object_comparison_with_coordinates.txt")
        self.gold_button = QPushButton("Load comparisons")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(TABLE_COLUMNS))
        self._build_layout()
        self._connect()
        self._refresh_layers()

    def _build_layout(self) -> None:
        grid = QGridLayout()
        for row, (key, combo) in enumerate(self.combos.items()):
            grid.addWidget(QLabel(key), row, 0)
            grid.addWidget(combo, row, 1)
        buttons = QHBoxLayout()
        for w in (self.side_by_side, self.overlay):
            buttons.addWidget(w)
        work = QHBoxLayout()
        for w in (self.register_button, self.lungs_button, self.cancel_button):
            work.addWidget(w)
        gold = QHBoxLayout()
        gold.addWidget(self.gold_path)
        gold.addWidget(self.gold_button)
        box = QVBoxLayout(self)
        for part in (grid, buttons, work, gold):
            box.addLayout(part)
        box.addWidget(self.status)
        box.addWidget(self.table)

    def _connect(self) -> None:
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        for key in ("current", "prior"):
            self.combos[key].currentTextChanged.connect(self._exams_changed)
        for key in ("current lungs", "prior lungs"):
            self.combos[key].currentTextChanged.connect(self.update_table)
        self.side_by_side.toggled.connect(self._side_by_side)
        self.overlay.toggled.connect(self._overlay)
        self.register_button.clicked.connect(self.register)
        self.lungs_button.clicked.connect(self.segment_lungs)
        self.cancel_button.clicked.connect(self._cancel)
        self.gold_button.clicked.connect(self._load_gold)

    # ------------------------------------------------------------------ layers
    def _layer(self, key: str) -> Any | None:
        name = self.combos[key].currentText()
        return next((x for x in self.viewer.layers if x.name == name), None) if name != NONE else None

    def _refresh_layers(self, *_: Any) -> None:
        graphs = scene_graph_layers(self.viewer)
        cur, pri = (sm.order_exams(graphs[-2], graphs[-1]) if len(graphs) >= 2
                    else (graphs[0] if graphs else None, None))  # fmt: skip
        names = [g.name for g in graphs]
        fill_combo(self.combos["current"], names, prefer=cur.name if cur else None)
        fill_combo(self.combos["prior"], names, prefer=pri.name if pri else None)
        films = [NONE, *(x.name for x in radiograph_layers(self.viewer))]
        labels = [NONE, *(x.name for x in self.viewer.layers if x._type_string == "labels" and x.ndim == 2)]
        for side in ("current", "prior"):
            layer = self._layer(side)
            film = sm.film_of(self.viewer, layer) if layer is not None else None
            fill_combo(self.combos[f"{side} film"], films, prefer=film.name if film else None)
            fill_combo(self.combos[f"{side} lungs"], labels)
        self._exams_changed()

    def _exams_changed(self, *_: Any) -> None:
        for layer in self._linked:
            layer.selected_data.events.items_changed.disconnect(self._region_selected)
        cur, pri = self._layer("current"), self._layer("prior")
        self._linked = [x for x in (cur, pri) if x is not None]
        if cur is pri:
            self._linked = self._linked[:1]
        for layer in self._linked:
            layer.selected_data.events.items_changed.connect(self._region_selected)
        self._show_comparisons()

    def _show_comparisons(self) -> None:
        cur, pri = self._layer("current"), self._layer("prior")
        if cur is None:
            return
        prior_id = scene_graph_of(pri).image_id if pri is not None and pri is not cur else None
        comparisons = comparisons_for(scene_graph_of(cur), prior_id, self.gold)
        set_comparisons(cur, comparisons)
        self.update_table()

    def _region_selected(self, *_: Any) -> None:
        """Selecting regions in one exam selects the same regions in the other."""
        if self._syncing or len(self._linked) < 2:
            return
        self._syncing = True
        try:
            source = next((x for x in self._linked if x.selected_data), None)
            active = self.viewer.layers.selection.active
            if active in self._linked:
                source = active
            if source is not None:
                names = selected_region_names(source)
                for layer in self._linked:
                    if layer is not source:
                        select_regions(layer, names)
        finally:
            self._syncing = False

    # ------------------------------------------------------------------ display modes
    def _pair(self) -> list[Any] | None:
        layers = [self._layer(k) for k in ("prior film", "prior", "current film", "current")]
        if any(x is None for x in layers):
            notify_error(ValueError("choose both exams and their films"), "Sequential exams")
            return None
        return layers

    def _side_by_side(self, on: bool) -> None:
        self._restore_visibility()
        if not on:
            self.viewer.grid.enabled = False
            return
        layers = self._pair()
        if layers is None:
            self.side_by_side.setChecked(False)
            return
        self.overlay.setChecked(False)
        for target, layer in enumerate(layers):  # prior film, prior boxes, current film, boxes
            self.viewer.layers.move(self.viewer.layers.index(layer), target)
        self._hide_others(layers)
        self.viewer.grid.stride = 2
        self.viewer.grid.enabled = True
        self.viewer.reset_view()

    def _overlay(self, on: bool) -> None:
        self._restore_visibility()
        if not on:
            return
        extra = [x for x in self.viewer.layers if (x.metadata.get("cxseg") or {}).get("registered_to")]
        keep = [self._layer("current film"), self._layer("current"), *extra]
        if not extra:
            notify_error(ValueError("register the prior first"), "Overlay")
            self.overlay.setChecked(False)
            return
        self.side_by_side.setChecked(False)
        self.viewer.grid.enabled = False
        self._hide_others([x for x in keep if x is not None])
        self.viewer.reset_view()

    def _hide_others(self, keep: list[Any]) -> None:
        self._hidden = [x for x in self.viewer.layers if x not in keep and x.visible]
        for layer in self._hidden:
            layer.visible = False
        for layer in keep:
            layer.visible = True

    def _restore_visibility(self) -> None:
        for layer in self._hidden:
            if layer in self.viewer.layers:
                layer.visible = True
        self._hidden = []

    # ------------------------------------------------------------------ work in workers
    def _start(self, job, args: tuple, total: int, desc: str, done) -> None:

        progress = {"total": total, "desc": desc} if total else {"desc": desc}
        self._worker = create_job(job, *args, _progress=progress, _ignore_errors=True)
        self._worker.returned.connect(done)
        self._worker.errored.connect(lambda e: notify_error(e, desc))
        self._worker.aborted.connect(lambda: self.status.setText(f"{desc}: cancelled"))
        self._worker.finished.connect(self._finished)
        for w in (self.register_button, self.lungs_button):
            w.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"{desc} ...")
        self._worker.start()

    def _finished(self) -> None:
        self._worker = None
        for w in (self.register_button, self.lungs_button):
            w.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _cancel(self) -> None:
        if self._worker is not None:
            self._worker.quit()

    def register(self) -> None:
        """Register the prior film to the current film (thread worker); adds overlay layers."""
        cur, pri = self._layer("current film"), self._layer("prior film")
        if cur is None or pri is None:
            notify_error(ValueError("choose the current and the prior film"), "Register")
            return
        desc = f"Registering {pri.name} to {cur.name}"
        self._start(sm.register_job, (sm.film_arrays(cur), sm.film_arrays(pri)), 3, desc,
                    lambda r: self._registered(r, cur, pri))  # fmt: skip

    def _registered(self, result: Any, cur: Any, pri: Any) -> None:
        self.result = result
        meta = {"cxseg": {"registered_to": cur.name, "registration": {
            "matrix": result.matrix.tolist(), "offset": result.offset.tolist(),
            "metric": result.metric, "rotation_deg": result.rotation_deg}}}  # fmt: skip
        self.viewer.add_image(result.resampled, name=f"{pri.name} registered to {cur.name}",
                              affine=sm.layer_world_affine(cur), colormap="magenta",
                              blending="additive", opacity=0.6, metadata=meta)  # fmt: skip
        prior_regions = self._layer("prior")
        if prior_regions is not None and len(prior_regions.data):
            self.viewer.add_shapes(
                transform_boxes(result, [np.asarray(v) for v in prior_regions.data]),
                shape_type="rectangle", name=f"{prior_regions.name} on {cur.name}",
                edge_color="#ff9f0a", face_color="transparent",
                edge_width=float(np.max(prior_regions.edge_width)),
                features={"bbox_name": region_names(prior_regions)}, metadata=meta,
            )  # fmt: skip
        self.status.setText(
            f"Registered {pri.name} to {cur.name}: rotation {result.rotation_deg:.2f} deg, "
            f"shift {np.round(result.offset, 1).tolist()} mm, Mattes MI {result.metric:.3f}"
        )

    def segment_lungs(self) -> None:
        """Segment the lungs on both films (cxr-lungs) in a worker; adds Labels layers."""
        films = [self._layer("current film"), self._layer("prior film")]
        if any(f is None for f in films):
            notify_error(ValueError("choose the current and the prior film"), "Segment lungs")
            return
        images = [image_from_layer(self.viewer, f) for f in films]
        self._start(sm.lungs_job, (images,), 0, "Segmenting lungs (cxr-lungs)",
                    lambda maps: self._lungs_done(maps, films))  # fmt: skip

    def _lungs_done(self, maps: list, films: list) -> None:
        for side, film, label_map in zip(("current", "prior"), films, maps, strict=True):
            layer = add_label_map(self.viewer, label_map, f"{film.name} lungs")
            self._refresh_layers()
            self.combos[f"{side} lungs"].setCurrentText(layer.name)
        self.status.setText("Lungs segmented on both films (cxr-lungs)")
        self.update_table()

    # ------------------------------------------------------------------ gold file, table
    def _load_gold(self) -> None:
        path = self.gold_path.text().strip()
        try:
            self.gold = read_gold_comparisons(path)
        except Exception as e:  # names the file; the viewer lives on
            notify_error(e, f"Reading comparisons from {path}")
            return
        self._show_comparisons()

    def update_table(self, *_: Any) -> None:
        """Fill the table: per region the report's comparison and the box areas."""
        cur, pri = self._layer("current"), self._layer("prior")
        if cur is None or pri is None:
            self.table.setRowCount(0)
            return
        units = [sm.area_unit(self._layer(f"{side} film")) for side in ("prior", "current")]
        self.table.setHorizontalHeaderLabels(
            ["region", "report vs prior", f"prior ({units[0]})", f"current ({units[1]})", "change %"])  # fmt: skip
        comparisons = dict(zip(region_names(cur), cur.features.get("comparison", []), strict=False))
        rows = sm.region_rows(cur, pri, {k: [v] for k, v in comparisons.items() if v})
        rows += sm.lung_rows(self._layer("current lungs"), self._layer("prior lungs"))
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            change = row.change_percent if units[0] == units[1] else None
            values = [row.bbox_name, row.comparison, _fmt(row.area_prior), _fmt(row.area_current),
                      "" if change is None else f"{change:+.1f}"]  # fmt: skip
            for j, text in enumerate(values):
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.rows = rows

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt)
        self._cancel()
        super().closeEvent(event)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"
