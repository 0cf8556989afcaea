"""Findings panel: the report's findings per Chest ImaGenome region, linked to the boxes.

One tree row per region (boxes in layer order, then regions the report names without a box),
its phrases below it and each phrase's attributes below that (category, yes/no, finding) with
the phrase's severity, temporal and comparison cues. Selecting a row selects the box and
selecting boxes selects their rows. Attribute edits (yes/no, add, remove) change the scene graph
kept in the layer's metadata, so saving the layer writes them; the box colours follow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..anatomy.imagenome import ATTRIBUTE_CATEGORIES, REGION_NAMES, Attribute, RegionFindings
from ._findings_layers import (
    is_scene_graph_layer,
    place_on,
    placement_of,
    radiograph_layers,
    refresh_regions,
    region_names,
    scene_graph_layers,
    scene_graph_of,
    select_regions,
    selected_region_names,
)
from ._layers import fill_combo, notify_error

COLUMNS = ("region / phrase", "state / category", "yes/no", "finding", "severity", "temporal", "comparison")
ALL = "(all)"
_ROLE = Qt.ItemDataRole.UserRole


class FindingsWidget(QWidget):
    """Dock widget: a scene graph's findings, filterable, editable, linked to its boxes."""

    def __init__(self, napari_viewer: Any):
        super().__init__()
        self.viewer = napari_viewer
        self._layer: Any = None
        self._syncing = False
        self.layer_combo = QComboBox()
        self.image_combo = QComboBox()
        self.place_button = QPushButton("Place boxes on this radiograph")
        self.placement_label = QLabel("")
        self.placement_label.setWordWrap(True)
        self.category_filter = QComboBox()
        self.finding_filter = QComboBox()
        self.abnormal_only = QCheckBox("regions with abnormal findings only")
        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setSelectionMode(QTreeWidget.SelectionMode.ExtendedSelection)
        self.tree.setColumnWidth(0, 190)
        for col in range(1, len(COLUMNS)):
            self.tree.header().setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.add_category = QComboBox()
        self.add_name = QComboBox()
        self.add_present = QComboBox()
        self.add_present.addItems(["yes", "no"])
        self.add_button = QPushButton("Add attribute")
        self.remove_button = QPushButton("Remove attribute")
        self.name_combo = QComboBox()
        self.name_combo.addItems(list(REGION_NAMES))
        self.name_button = QPushButton("Name selected box")
        self._build_layout()
        fill_combo(self.category_filter, [ALL, *ATTRIBUTE_CATEGORIES])
        fill_combo(self.add_category, list(ATTRIBUTE_CATEGORIES))
        self._fill_add_names()
        self._connect()
        self._refresh_layers()

    # ------------------------------------------------------------------ layout and signals
    def _build_layout(self) -> None:
        grid = QGridLayout()
        grid.addWidget(QLabel("Regions layer"), 0, 0)
        grid.addWidget(self.layer_combo, 0, 1)
        grid.addWidget(QLabel("Radiograph"), 1, 0)
        grid.addWidget(self.image_combo, 1, 1)
        grid.addWidget(self.place_button, 2, 1)
        grid.addWidget(QLabel("Category"), 3, 0)
        grid.addWidget(self.category_filter, 3, 1)
        grid.addWidget(QLabel("Finding"), 4, 0)
        grid.addWidget(self.finding_filter, 4, 1)
        edit = QHBoxLayout()
        for w in (self.add_category, self.add_name, self.add_present, self.add_button):
            edit.addWidget(w)
        edit2 = QHBoxLayout()
        for w in (self.remove_button, self.name_combo, self.name_button):
            edit2.addWidget(w)
        box = QVBoxLayout(self)
        box.addLayout(grid)
        box.addWidget(self.placement_label)
        box.addWidget(self.abnormal_only)
        box.addWidget(self.tree)
        box.addLayout(edit)
        box.addLayout(edit2)

    def _connect(self) -> None:
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.layer_combo.currentTextChanged.connect(self._select_layer)
        self.place_button.clicked.connect(self._place)
        self.category_filter.currentTextChanged.connect(self._category_changed)
        self.finding_filter.currentTextChanged.connect(self._apply_filter)
        self.abnormal_only.toggled.connect(self._apply_filter)
        self.tree.itemSelectionChanged.connect(self._rows_selected)
        self.tree.itemChanged.connect(self._item_changed)
        self.add_category.currentTextChanged.connect(self._fill_add_names)
        self.add_button.clicked.connect(self._add_attribute)
        self.remove_button.clicked.connect(self._remove_attribute)
        self.name_button.clicked.connect(self._name_box)

    def _refresh_layers(self, *_: Any) -> None:
        names = [layer.name for layer in scene_graph_layers(self.viewer)]
        fill_combo(self.layer_combo, names, prefer=self._layer.name if self._layer else None)
        fill_combo(self.image_combo, [layer.name for layer in radiograph_layers(self.viewer)])
        self._select_layer(self.layer_combo.currentText())

    @property
    def layer(self) -> Any:
        return self._layer

    def _select_layer(self, name: str) -> None:
        layer = next((x for x in self.viewer.layers if x.name == name), None)
        layer = layer if is_scene_graph_layer(layer) else None
        if layer is self._layer:
            return
        if self._layer is not None:
            self._layer.selected_data.events.items_changed.disconnect(self._boxes_selected)
            self._layer.events.data.disconnect(self._rebuild)
        self._layer = layer
        if layer is not None:
            layer.selected_data.events.items_changed.connect(self._boxes_selected)
            layer.events.data.connect(self._rebuild)
        self._rebuild()

    # ------------------------------------------------------------------ tree
    def _rebuild(self, *_: Any) -> None:
        self._syncing = True
        try:
            self.tree.clear()
            if self._layer is None:
                self.placement_label.setText("Open a <dicom_id>_SceneGraph.json to see its regions.")
                return
            sg = scene_graph_of(self._layer)
            p = placement_of(self._layer)
            where = Path(p.reference).name if "/" in p.reference else p.reference
            self.placement_label.setText(f"{sg.image_id}: boxes on {where} ({p.how})")
            self.placement_label.setToolTip(p.reference)
            names = [n for n in region_names(self._layer) if n]
            names += [f.bbox_name for f in sg.attributes if f.bbox_name not in names]
            for name in dict.fromkeys(names):
                self.tree.addTopLevelItem(self._region_item(name, sg.findings(name)))
            self.tree.expandAll()
            self._fill_finding_filter()
        finally:
            self._syncing = False
        self._apply_filter()
        self._boxes_selected()

    def _region_item(self, name: str, findings: RegionFindings | None) -> QTreeWidgetItem:
        layer = self._layer
        comparisons = dict(zip(region_names(layer), layer.features.get("comparison", []), strict=False))
        state = "abnormal" if findings and findings.abnormal else "normal" if findings else ""
        item = QTreeWidgetItem([name, state, "", "", "", "", str(comparisons.get(name, ""))])
        item.setData(0, _ROLE, ("region", name))
        if findings is None:
            return item
        for p, phrase_attrs in enumerate(findings.attributes):
            text = findings.phrases[p] if p < len(findings.phrases) else "(no phrase)"
            cues = [", ".join(findings.cues(k, p)) for k in ("severity", "temporal", "comparison")]
            child = QTreeWidgetItem([text, "", "", "", *cues])
            child.setData(0, _ROLE, ("phrase", name, p))
            child.setToolTip(0, text)
            for a, attr in enumerate(phrase_attrs):
                leaf = QTreeWidgetItem(["", attr.category, "", attr.name, "", "", ""])
                leaf.setFlags(leaf.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                leaf.setCheckState(2, Qt.CheckState.Checked if attr.present else Qt.CheckState.Unchecked)
                leaf.setText(2, "yes" if attr.present else "no")
                leaf.setData(0, _ROLE, ("attribute", name, p, a))
                child.addChild(leaf)
            item.addChild(child)
        return item

    def _fill_finding_filter(self) -> None:
        cat = self.category_filter.currentText()
        sg = scene_graph_of(self._layer) if self._layer is not None else None
        found = set()
        for f in sg.attributes if sg else []:
            found |= {a.name for a in f.all_attributes() if cat in (ALL, a.category)}
        fill_combo(self.finding_filter, [ALL, *sorted(found)], prefer=self.finding_filter.currentText())

    def _category_changed(self, *_: Any) -> None:
        self._fill_finding_filter()
        self._apply_filter()

    def _apply_filter(self, *_: Any) -> None:
        """Hide regions (and attributes) that do not match the category/finding filter."""
        cat, finding = self.category_filter.currentText(), self.finding_filter.currentText()
        sg = scene_graph_of(self._layer) if self._layer is not None else None
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            name = item.data(0, _ROLE)[1]
            f = sg.findings(name) if sg else None
            match = (cat, finding) == (ALL, ALL) and not self.abnormal_only.isChecked()
            if f is not None:
                hits = [a for a in f.all_attributes() if cat in (ALL, a.category)
                        and finding in (ALL, a.name)]  # fmt: skip
                filtered = (cat, finding) != (ALL, ALL)
                match = (bool(hits) or not filtered) and (f.abnormal or not self.abnormal_only.isChecked())
                for p in range(item.childCount()):
                    phrase = item.child(p)
                    for k in range(phrase.childCount()):
                        leaf = phrase.child(k)
                        leaf.setHidden(filtered and (leaf.text(1), leaf.text(3)) not in
                                       {(a.category, a.name) for a in hits})  # fmt: skip
            item.setHidden(not match)

    def visible_regions(self) -> list[str]:
        """Names of the region rows the filter shows."""
        return [
            self.tree.topLevelItem(i).data(0, _ROLE)[1]
            for i in range(self.tree.topLevelItemCount())
            if not self.tree.topLevelItem(i).isHidden()
        ]

    # ------------------------------------------------------------------ selection links
    def _rows_selected(self) -> None:
        if self._syncing or self._layer is None:
            return
        names = {it.data(0, _ROLE)[1] for it in self.tree.selectedItems()}
        self._syncing = True
        try:
            select_regions(self._layer, names)
        finally:
            self._syncing = False

    def _boxes_selected(self, *_: Any) -> None:
        if self._syncing or self._layer is None:
            return
        names = selected_region_names(self._layer)
        self._syncing = True
        try:
            self.select_rows(names)
        finally:
            self._syncing = False

    def select_rows(self, names: set[str]) -> None:
        """Select the region rows named ``names`` (and show the first)."""
        self.tree.clearSelection()
        first = None
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if item.data(0, _ROLE)[1] in names:
                item.setSelected(True)
                first = first or item
        if first is not None:
            self.tree.scrollToItem(first)

    def selected_rows(self) -> set[str]:
        return {it.data(0, _ROLE)[1] for it in self.tree.selectedItems()}

    # ------------------------------------------------------------------ edits
    def _item_changed(self, item: QTreeWidgetItem, column: int) -> None:
        if self._syncing or column != 2:
            return
        role = item.data(0, _ROLE)
        if not role or role[0] != "attribute":
            return
        _, name, p, a = role
        findings = scene_graph_of(self._layer).findings(name)
        attr = findings.attributes[p][a]
        attr.present = item.checkState(2) == Qt.CheckState.Checked
        attr.raw = None
        # update in place: Qt is still inside this item's signal, rebuilding would delete it
        self._syncing = True
        try:
            item.setText(2, "yes" if attr.present else "no")
            region = item.parent().parent()
            region.setText(1, "abnormal" if findings.abnormal else "normal")
        finally:
            self._syncing = False
        refresh_regions(self._layer)
        self._apply_filter()

    def _target(self) -> tuple[str, int | None, int | None] | None:
        items = self.tree.selectedItems()
        if not items:
            return None
        role = items[0].data(0, _ROLE)
        return role[1], (role[2] if len(role) > 2 else None), (role[3] if len(role) > 3 else None)

    def _fill_add_names(self, *_: Any) -> None:
        fill_combo(self.add_name, list(ATTRIBUTE_CATEGORIES.get(self.add_category.currentText(), ())))

    def add_attribute(self, bbox_name: str, category: str, name: str, present: bool,
                      phrase: int | None = None) -> None:  # fmt: skip
        """Add ``category|yes/no|name`` to a phrase of a region (a new phrase when none)."""
        sg = scene_graph_of(self._layer)
        f = sg.findings(bbox_name)
        if f is None:
            f = RegionFindings(bbox_name, extra={bbox_name: True})
            sg.attributes.append(f)
        if phrase is None or phrase >= len(f.attributes):
            f.attributes.append([])
            f.phrases.append("(added in napari-cxseg)")
            phrase = len(f.attributes) - 1
        f.attributes[phrase].append(Attribute(category, present, name))
        self._edited()

    def _add_attribute(self) -> None:
        target = self._target()
        if target is None or self._layer is None:
            notify_error(ValueError("select a region or phrase first"), "Add attribute")
            return
        self.add_attribute(target[0], self.add_category.currentText(), self.add_name.currentText(),
                           self.add_present.currentText() == "yes", target[1])  # fmt: skip

    def _remove_attribute(self) -> None:
        target = self._target()
        if target is None or target[2] is None:
            notify_error(ValueError("select an attribute row first"), "Remove attribute")
            return
        name, p, a = target
        del scene_graph_of(self._layer).findings(name).attributes[p][a]
        self._edited()

    def _name_box(self) -> None:
        layer = self._layer
        if layer is None or len(layer.selected_data) != 1:
            notify_error(ValueError("select exactly one box"), "Name selected box")
            return
        i = next(iter(layer.selected_data))
        feats = layer.features.copy()
        feats.loc[i, "bbox_name"] = self.name_combo.currentText()
        layer.features = feats
        self._edited()

    def _edited(self) -> None:
        refresh_regions(self._layer)
        selected = self.selected_rows()
        self._rebuild()
        self.select_rows(selected)

    def _place(self) -> None:
        image = next((x for x in self.viewer.layers if x.name == self.image_combo.currentText()), None)
        if self._layer is None or image is None:
            notify_error(ValueError("choose a regions layer and a radiograph"), "Place boxes")
            return
        try:
            place_on(self._layer, image)
        except Exception as e:  # the viewer lives on; the message names the layers
            notify_error(e, f"Placing {self._layer.name} on {image.name}")
            return
        self._rebuild()
