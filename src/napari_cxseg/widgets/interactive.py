"""Click-to-segment dock widget: positive/negative clicks and a box give one object's mask.

The prompts live in a Points layer (green = object, red = not the object; Shift+click or the
"negative" toggle for red) and a Shapes layer (a box). Every interaction runs
:class:`~napari_cxseg.editing.interactive.PromptSession` in a worker, and the result shows in a
preview layer; Accept writes it into the chosen class of a Labels layer as ONE undoable step.
In a volume one click on one slice gives the whole 3D structure.

The "Method" chooser picks the engine's backend: the click-guided networks shipped with the
package ("network", the default when available), the intensity-based classical method (no
model), or a user's VISTA3D bundle (a folder, and whether to trust its code). Changing the
method, the bundle folder or the trust setting keeps the prompts on screen and re-runs them
with the new method (a new session).

Prompts edited by hand in their layers are followed: deleting a point (select it, press
Delete) or the box, or moving one, rebuilds the session from the remaining prompts in their
order (the session can only undo its latest interaction). In the 3D canvas a click in
"Click prompts" mode casts a ray through the image and places the prompt on the voxel that
the rendering shows there (maximum intensity for MIP; the first voxel above the threshold for
isosurface / translucent rendering).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..images import CxsegError, LabelClass, default_colour
from ._correct_tools import compact_combo
from ._jobs import start_worker
from ._layers import (
    apply_array,
    check_same_grid,
    fill_combo,
    image_from_layer,
    notify_error,
    set_classes,
)
from ._preview import (
    image_layers,
    labels_layer_for_image,
    layer_classes,
    layer_spacing,
    present_ids,
    remove_layer,
    show_preview,
    user_labels_layers,
)
from ._prompt_layers import (
    click_adds_point,
    colour_points,
    make_box_layer,
    make_points_layer,
    pick_in_image,
)

if TYPE_CHECKING:
    import napari

NEW_LAYER = "(new layer)"
PREVIEW = "cxseg interactive preview"

#: human names of the backends, used when the engine has no ``BACKEND_LABELS``
FALLBACK_LABELS = {
    "network": "Click-guided network",
    "classical": "Intensity (no model)",
    "vista3d": "VISTA3D bundle (point prompts)",
}
#: the order of the methods in the chooser (others follow, sorted)
METHOD_ORDER = ("network", "classical", "vista3d")


def method_choices() -> list[tuple[str, str]]:
    """``(backend name, human label)`` of the engine's click-to-segment backends, in order."""
    try:
        from ..editing import interactive as engine

        names = [str(n) for n in engine.available_backends()]
        labels = {**FALLBACK_LABELS, **dict(getattr(engine, "BACKEND_LABELS", None) or {})}
    except Exception:  # the engine failed to import: the widget still opens
        names, labels = ["classical"], dict(FALLBACK_LABELS)
    rank = {name: i for i, name in enumerate(METHOD_ORDER)}
    names = sorted(dict.fromkeys(names), key=lambda n: (rank.get(n, len(rank)), n))
    return [(n, str(labels.get(n, n))) for n in names]


def _run(session: Any, op: tuple) -> tuple[np.ndarray, float]:
    """Apply one queued operation to the session (worker thread); returns (mask, seconds).

    ``("replay", initial_mask, ops)`` rebuilds the session: reset to ``initial_mask``, then
    each of ``ops`` in order.
    """
    t0 = time.perf_counter()
    kind = op[0]
    if kind == "point":
        mask = session.add_point(op[1], positive=op[2])
    elif kind == "box":
        mask = session.add_box(op[1])
    elif kind == "undo":
        mask = session.undo_last()
    elif kind == "replay":
        mask = session.reset(op[1])
        for sub in op[2]:
            mask, _ = _run(session, sub)
    else:  # "reset"
        mask = session.reset(op[1])
    return np.asarray(mask), time.perf_counter() - t0


class InteractiveWidget(QWidget):
    """Segment one object at a time from clicks and boxes, then accept it into a class.

    Parameters
    ----------
    napari_viewer
        The viewer (injected by napari).
    """

    #: ``(operation, seconds)`` after each interaction's mask is shown
    updated = Signal(str, float)
    #: the Labels layer an accepted mask was written to
    accepted = Signal(object)
    #: a failure message
    failed = Signal(str)

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session = None
        self._session_image = None
        self._session_spec: tuple | None = None  # (method, options) of the session
        self._queue: list[tuple] = []
        self._worker = None
        # prompt rows in the order they were added: kind, index (row), data, positive
        self._prompts: list[dict[str, Any]] = []
        self._initial: np.ndarray | None = None  # the mask the session starts from
        self._in_sync = True  # the session (with its queue) holds exactly the prompts
        self._syncing = False
        self.points = None
        self.boxes = None
        self.mask: np.ndarray | None = None

        self.image_combo = compact_combo()
        self.labels_combo = compact_combo()
        self.method_combo = compact_combo()
        self.method_combo.setToolTip("How clicks become a mask")
        choices = method_choices()
        for name, label in choices:
            self.method_combo.addItem(label, name)
        names = [n for n, _ in choices]
        default = "network" if "network" in names else "classical"
        if default in names:
            self.method_combo.setCurrentIndex(names.index(default))
        self.bundle_edit = QLineEdit()
        self.bundle_edit.setPlaceholderText("VISTA3D bundle folder")
        self.bundle_edit.setToolTip("The folder of a MONAI VISTA3D bundle (configs/, models/)")
        self.bundle_btn = QPushButton("...")
        self.bundle_btn.setToolTip("Choose the VISTA3D bundle folder")
        self.trust_check = QCheckBox("trust bundle code")
        self.trust_check.setToolTip(
            "Let the bundle run its own Python code (only for bundles from a source you trust)"
        )
        self.bundle_box = QWidget()
        bundle_form = QFormLayout(self.bundle_box)
        bundle_form.setContentsMargins(0, 0, 0, 0)
        bundle_row = QHBoxLayout()
        bundle_row.addWidget(self.bundle_edit, 1)
        bundle_row.addWidget(self.bundle_btn)
        bundle_form.addRow("Bundle", bundle_row)
        bundle_form.addRow(self.trust_check)
        self.class_spin = QSpinBox()
        self.class_spin.setRange(1, 65535)
        self.class_name = QLabel("")
        self.negative = QCheckBox("negative clicks (or Shift+click)")
        self.points_btn = QPushButton("Click prompts")
        self.points_btn.setToolTip("Click on the object (Shift+click: not the object)")
        self.box_btn = QPushButton("Box prompt")
        self.box_btn.setToolTip("Draw a rectangle around the object")
        self.accept_btn = QPushButton("Accept")
        self.accept_btn.setToolTip("Write the object into the class (one undoable step)")
        self.undo_btn = QPushButton("Undo last interaction")
        self.existing_btn = QPushButton("Start from existing mask")
        self.existing_btn.setToolTip("Refine the class's current mask with clicks")
        self.reset_btn = QPushButton("Reset")
        self.status = QLabel("Choose an image, then click on the object.")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Method", self.method_combo)
        form.addRow(self.bundle_box)
        form.addRow("Image", self.image_combo)
        form.addRow("Labels", self.labels_combo)
        form.addRow("Class", self.class_spin)
        form.addRow("", self.class_name)
        form.addRow(self.negative)
        grid = QGridLayout()
        grid.addWidget(self.points_btn, 0, 0)
        grid.addWidget(self.box_btn, 0, 1)
        grid.addWidget(self.undo_btn, 1, 0)
        grid.addWidget(self.reset_btn, 1, 1)
        grid.addWidget(self.existing_btn, 2, 0, 1, 2)
        grid.addWidget(self.accept_btn, 3, 0, 1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(grid)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.points_btn.clicked.connect(self.activate_points)
        self.box_btn.clicked.connect(self.activate_box)
        self.accept_btn.clicked.connect(self.accept)
        self.undo_btn.clicked.connect(self.undo_last)
        self.existing_btn.clicked.connect(self.start_from_existing)
        self.reset_btn.clicked.connect(self.reset)
        self.negative.toggled.connect(self._on_negative_toggled)
        self.method_combo.currentIndexChanged.connect(self._on_method_changed)
        self.bundle_edit.editingFinished.connect(self._on_backend_changed)
        self.bundle_btn.clicked.connect(self.choose_bundle)
        self.trust_check.toggled.connect(self._on_backend_changed)
        self.bundle_box.setVisible(self.method() == "vista3d")
        self.image_combo.currentTextChanged.connect(self._on_image_changed)
        self.labels_combo.currentTextChanged.connect(self._on_labels_changed)
        self.class_spin.valueChanged.connect(self._on_class_changed)
        for ev in ("inserted", "removed", "reordered"):
            getattr(self.viewer.layers.events, ev).connect(self._refresh_layers)
        self._refresh_layers()
        self.warm_up = None
        self._start_warm_up()

    def _start_warm_up(self, *args: Any) -> None:
        """Load in the background what the first click with the chosen method needs (once)."""
        from ._warmup import warm_for_clicks

        try:
            layer = self.image_layer()
        except CxsegError:  # no image yet: the imports still warm up
            layer = None
        ndim = None if layer is None or getattr(layer, "rgb", False) else layer.ndim
        self.warm_up = warm_for_clicks(ndim, self.method()) or self.warm_up

    # ------------------------------------------------------------------ layer choices
    def _refresh_layers(self, event: Any = None) -> None:
        images = [ly.name for ly in image_layers(self.viewer)]
        labels = [NEW_LAYER, *(ly.name for ly in user_labels_layers(self.viewer))]
        fill_combo(self.image_combo, images, prefer=len(images) - 1)
        fill_combo(self.labels_combo, labels)
        if self.image_combo.currentText() != self._session_image:
            self._on_image_changed(self.image_combo.currentText())
        self._update_class_name()

    def image_layer(self):
        """The chosen Image layer; raises :class:`CxsegError` when none."""
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise CxsegError("choose an Image layer to segment")
        return self.viewer.layers[name]

    def labels_layer(self):
        """The chosen Labels layer, or ``None`` for a new one."""
        name = self.labels_combo.currentText()
        if name == NEW_LAYER or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]

    def _on_image_changed(self, name: str) -> None:
        if name == self._session_image:
            return
        self._drop_session()
        self._session_image = name or None
        if hasattr(self, "warm_up"):  # not while __init__ fills the choices
            self._start_warm_up()

    def _on_labels_changed(self, name: str) -> None:
        layer = self.labels_layer()
        if layer is not None and layer.selected_label:
            self.class_spin.setValue(int(layer.selected_label))
        self._update_class_name()

    def _on_class_changed(self, value: int) -> None:
        self._update_class_name()
        if self.mask is not None:
            self._show_mask(self.mask)

    def _update_class_name(self) -> None:
        layer = self.labels_layer()
        cid = int(self.class_spin.value())
        if layer is None:
            self.class_name.setText(f"object {cid} (new)")
            return
        cls = layer_classes(layer).get(cid)
        self.class_name.setText(cls.name if cls else f"class {cid} (new)")

    # ------------------------------------------------------------------ method
    def method(self) -> str:
        """The chosen backend's name (``"network"``, ``"classical"``, ``"vista3d"`` ...)."""
        return str(self.method_combo.currentData() or "classical")

    def method_label(self, name: str | None = None) -> str:
        """The human name of a backend (the chosen one by default)."""
        name = self.method() if name is None else name
        i = self.method_combo.findData(name)
        return self.method_combo.itemText(i) if i >= 0 else FALLBACK_LABELS.get(name, name)

    def set_method(self, name: str) -> None:
        """Choose a backend by name (as the Method chooser does).

        Raises
        ------
        ValueError
            When the engine has no such backend.
        """
        i = self.method_combo.findData(name)
        if i < 0:
            names = [self.method_combo.itemData(k) for k in range(self.method_combo.count())]
            raise ValueError(f"unknown click-to-segment method {name!r}; available: {names}")
        self.method_combo.setCurrentIndex(i)

    def backend_options(self) -> dict[str, Any]:
        """The ``options`` for the chosen backend.

        Raises
        ------
        CxsegError
            For VISTA3D without an existing bundle folder.
        """
        if self.method() != "vista3d":
            return {}
        folder = self.bundle_edit.text().strip()
        if not folder:
            raise CxsegError(
                "VISTA3D needs its bundle: choose the bundle folder next to 'Bundle' "
                "(or pick another method)"
            )
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise CxsegError(f"VISTA3D bundle folder {path} does not exist")
        return {"bundle_dir": str(path), "trust": self.trust_check.isChecked()}

    def _spec(self) -> tuple:
        """What a session depends on besides the image: the method and its settings."""
        if self.method() == "vista3d":
            return ("vista3d", self.bundle_edit.text().strip(), self.trust_check.isChecked())
        return (self.method(),)

    def choose_bundle(self) -> None:
        """Ask for the VISTA3D bundle folder."""
        folder = QFileDialog.getExistingDirectory(
            self, "VISTA3D bundle folder", self.bundle_edit.text().strip() or str(Path.home())
        )
        if folder:
            self.bundle_edit.setText(folder)
            self._on_backend_changed()

    def _on_method_changed(self, index: int = -1) -> None:
        self.bundle_box.setVisible(self.method() == "vista3d")
        self._start_warm_up()
        self._on_backend_changed()

    def _on_backend_changed(self, *args: Any) -> None:
        """The method or its settings changed: a new session re-runs the prompts."""
        if self.session is None and self._in_sync:
            return  # nothing computed yet: the next click uses the new method
        if self.session is not None and self._spec() == self._session_spec:
            return  # e.g. the bundle field lost focus unchanged
        self._queue.clear()
        self.session = None
        self._session_spec = None
        if not self._prompts and self._initial is None:
            self._in_sync = True
            self.mask = None
            remove_layer(self.viewer, PREVIEW)
            self.status.setText(f"Method: {self.method_label()}. Click on the object.")
            return
        self._in_sync = False
        try:
            self.backend_options()
        except CxsegError as exc:  # e.g. VISTA3D chosen, its folder not yet
            self.mask = None
            remove_layer(self.viewer, PREVIEW)
            self.status.setText(f"{exc}. The prompts re-run once it is set.")
            return
        self._resync()

    # ------------------------------------------------------------------ prompt layers
    def ensure_prompt_layers(self) -> None:
        """Create the prompt layers over the chosen image (once)."""
        image = self.image_layer()
        if image.ndim not in (2, 3):
            raise CxsegError(f"'{image.name}' is {image.ndim}D: click-to-segment works on 2D or 3D")
        pts = make_points_layer(self.viewer, image)
        if pts is not self.points:
            self.points = pts
            pts.events.data.connect(self._on_points_data)
            click_adds_point(pts, self.negative.isChecked, self.pick_3d)
        box = make_box_layer(self.viewer, image)
        if box is not self.boxes:
            self.boxes = box
            box.events.data.connect(self._on_box_data)

    def activate_points(self) -> None:
        """Select the prompt Points layer: a click adds a prompt, a drag pans."""
        try:
            self.ensure_prompt_layers()
        except Exception as exc:
            self._fail("Click-to-segment", exc)
            return
        self.viewer.layers.selection.active = self.points
        self.points.mode = "pan_zoom"
        where = " (3D: on the voxel the rendering shows)" if self.viewer.dims.ndisplay == 3 else ""
        self.status.setText(
            f"Click on the object{where}; Shift+click marks what is not the object."
        )

    def activate_box(self) -> None:
        """Select the box Shapes layer in rectangle mode."""
        try:
            self.ensure_prompt_layers()
        except Exception as exc:
            self._fail("Click-to-segment", exc)
            return
        self.viewer.layers.selection.active = self.boxes
        self.boxes.mode = "add_rectangle"
        self.status.setText("Draw a box around the object.")

    def _on_negative_toggled(self, on: bool) -> None:
        if self.points is not None:
            self.points.feature_defaults = {"positive": not on}

    def pick_3d(self, event: Any) -> np.ndarray | None:
        """World coordinates of the image voxel that a 3D-canvas click points at.

        The click's ray is cast through the chosen Image layer
        (:func:`~napari_cxseg.widgets._prompt_layers.pick_in_image`); ``None`` (and a
        notification when something failed) when it misses the image.
        """
        try:
            return pick_in_image(self.image_layer(), event)
        except Exception as exc:
            self._fail("Click in 3D", exc)
            return None

    def _on_points_data(self, event: Any) -> None:
        if self._syncing:
            return
        action = getattr(event, "action", None)
        if action in ("removed", "changed"):
            self._on_prompts_edited("point", action, getattr(event, "data_indices", ()))
            return
        if action != "added":
            return
        pos = np.asarray(self.points.features["positive"], bool)
        colour_points(self.points)
        for i in np.asarray(event.data_indices, int) % len(self.points.data):
            self._queue_prompt("point", int(i), self.points.data[i], bool(pos[i]))
        # napari selects new points after this event; unselected prompts show their colour
        QTimer.singleShot(0, self._unselect_points)

    def _unselect_points(self) -> None:
        if self.points is not None and self.points in self.viewer.layers:
            self.points.selected_data = set()

    def _on_box_data(self, event: Any) -> None:
        if self._syncing:
            return
        action = getattr(event, "action", None)
        if action in ("removed", "changed"):
            self._on_prompts_edited("box", action, getattr(event, "data_indices", ()))
            return
        if action != "added":
            return
        i = len(self.boxes.data) - 1
        self._queue_prompt("box", i, np.asarray(self.boxes.data[i]))

    def _on_prompts_edited(self, kind: str, action: str, indices: Any) -> None:
        """Prompts deleted or moved by hand: follow the layer, then rebuild the session."""
        layer = self.points if kind == "point" else self.boxes
        if layer is None:
            return
        records = [r for r in self._prompts if r["kind"] == kind]
        rows = [np.asarray(d, float) for d in layer.data]
        gone = sorted({int(i) for i in indices if int(i) >= 0}) if action == "removed" else []
        if (
            action == "removed"
            and gone
            and len(rows) == len(records) - len([r for r in records if r["index"] in gone])
        ):  # rows deleted (select + Delete): the others move up
            for r in records:
                if r["index"] in gone:
                    self._prompts.remove(r)
                else:
                    r["index"] -= int(np.searchsorted(gone, r["index"]))
        elif (
            action == "changed"
            and len(rows) == len(records)
            and all(
                r["index"] < len(rows) and rows[r["index"]].shape == r["data"].shape
                for r in records
            )
        ):  # moved in place
            moved = [r for r in records if not np.allclose(rows[r["index"]], r["data"])]
            if not moved:
                return
            for r in moved:
                r["data"] = rows[r["index"]]
        else:  # the data was replaced: keep the prompts whose rows are still there
            self._match_rows(kind, records, rows)
        if kind == "point":
            self._restore_point_features()
        self._in_sync = False
        self._resync()

    def _match_rows(self, kind: str, records: list[dict], rows: list[np.ndarray]) -> None:
        """Re-link prompt records to layer rows by position; new rows become new prompts."""
        used: set[int] = set()
        for r in records:
            match = next(
                (
                    i
                    for i, row in enumerate(rows)
                    if i not in used
                    and row.shape == r["data"].shape
                    and np.allclose(row, r["data"])
                ),
                None,
            )
            if match is None:
                self._prompts.remove(r)
            else:
                r["index"] = match
                used.add(match)
        positive = np.ones(len(rows), bool)
        if kind == "point":
            features = self.points.features
            if "positive" in features and len(features) == len(rows):
                positive = np.asarray(features["positive"], bool)
        for i in sorted(set(range(len(rows))) - used):  # rows that were not prompts yet
            self._prompts.append(
                {"kind": kind, "index": i, "data": rows[i], "positive": bool(positive[i])}
            )

    def _restore_point_features(self) -> None:
        """Give each prompt row its own sign back (and its colour)."""
        if self.points is None or self.points not in self.viewer.layers:
            return
        n = len(self.points.data)
        positive = np.ones(n, bool)
        for r in self._prompts:
            if r["kind"] == "point" and r["index"] < n:
                positive[r["index"]] = r["positive"]
        self._syncing = True
        try:
            self.points.features = {"positive": positive}
            self.points.feature_defaults = {"positive": not self.negative.isChecked()}
            colour_points(self.points)
        finally:
            self._syncing = False

    def add_point(self, position: Any, positive: bool = True) -> None:
        """Add a click at data (index) coordinates of the image, as a user click would."""
        self.ensure_prompt_layers()
        self.points.feature_defaults = {"positive": bool(positive)}
        self.points.add(np.asarray(position, float))
        self.points.feature_defaults = {"positive": not self.negative.isChecked()}

    def add_box(self, corners: Any) -> None:
        """Add a box from two opposite corners in data coordinates of the image."""
        self.ensure_prompt_layers()
        c = np.asarray(corners, float)
        lo, hi = c.min(axis=0), c.max(axis=0)
        rect = np.array([lo, lo, hi, hi])
        rect[1, -1], rect[3, -1] = hi[-1], lo[-1]
        self.boxes.add_rectangles(rect)

    # ------------------------------------------------------------------ session + queue
    def _session(self):
        if self.session is None:
            from ..editing.interactive import PromptSession

            layer = self.image_layer()
            image = image_from_layer(self.viewer, layer)
            arr = np.asarray(image.array, np.float32) if image.channel_names is None else None
            if arr is None or arr.ndim not in (2, 3):
                raise CxsegError(f"'{layer.name}' must be a single-channel 2D or 3D image")
            backend, options = self.method(), self.backend_options()
            if backend == "network" and image.modality:
                options = {**options, "modality": image.modality}  # the network refuses others
            self.session = PromptSession(
                arr, spacing=layer_spacing(layer), backend=backend, options=options
            )
            self._session_spec = self._spec()
        return self.session

    def _queue_prompt(self, kind: str, index: int, data: np.ndarray, positive: bool = True) -> None:
        record = {
            "kind": kind,
            "index": index,
            "data": np.asarray(data, float).copy(),
            "positive": bool(positive),
        }
        self._prompts.append(record)
        self._enqueue(self._op(record), record)

    @staticmethod
    def _op(record: dict[str, Any]) -> tuple:
        if record["kind"] == "point":
            return ("point", np.asarray(record["data"], float), bool(record["positive"]))
        return ("box", np.asarray(record["data"], float))

    def _enqueue(self, op: tuple, record: dict | None = None) -> bool:
        """Queue one operation on the session (created here); ``False`` when that failed."""
        try:
            self._session()
        except Exception as exc:
            if record is not None:
                self._remove_prompt(record)
            self._fail("Click-to-segment", exc)
            return False
        if op[0] in ("reset", "replay"):
            self._in_sync = True
        elif not self._in_sync:  # the session lost track of the prompts: rebuild it
            self._resync()
            return True
        self._queue.append((op, record))
        self._pump()
        return True

    def _resync(self) -> None:
        """Rebuild the session from the start mask and the prompts, in their order.

        Queued operations are dropped: the rebuild holds all of them. A negative click that
        comes before every positive prompt (without a start mask) moves after the first one,
        since the session cannot segment from negative clicks alone; negative clicks left with
        no positive prompt at all are removed.
        """
        self._queue.clear()
        if self._initial is None:
            first = next(
                (i for i, r in enumerate(self._prompts) if r["kind"] == "box" or r["positive"]),
                None,
            )
            if first is None:
                for r in list(self._prompts):
                    self._remove_prompt(r)
                self._prompts.clear()
            elif first > 0:
                self._prompts[: first + 1] = [self._prompts[first], *self._prompts[:first]]
        if not self._prompts and self._initial is None:
            if self.session is not None:
                self._enqueue(("reset", None))
            else:
                self._in_sync = True
            self.mask = None
            remove_layer(self.viewer, PREVIEW)
            self.status.setText("No prompt left. Click on the object.")
            return
        ops = [self._op(r) for r in self._prompts]
        self._enqueue(("replay", self._initial, ops))

    def _pump(self) -> None:
        if self._worker is not None or not self._queue:
            return
        op, record = self._queue.pop(0)
        session = self.session
        self.status.setText(f"Segmenting ({self.method_label(session.backend)})...")

        def done(result: tuple[np.ndarray, float]) -> None:
            if session is not self.session:
                return  # the method or image changed meanwhile: a new session follows
            mask, secs = result
            if op[0] == "reset" and op[1] is None:
                self.mask = None
                remove_layer(self.viewer, PREVIEW)
                self.updated.emit(op[0], secs)
                return
            self.mask = mask
            self._show_mask(mask)
            n = session.n_interactions
            vox = int(mask.sum())
            label = self.method_label(session.backend)
            plural = "s" * (n != 1)
            if op[0] == "replay":
                k = max(1, len(op[2]))
                text = (
                    f"re-ran {len(op[2])} prompt{'s' * (k != 1)} with {label}: {secs:.2f} s, "
                    f"{secs / k:.2f} s per interaction ({n} interaction{plural}, {vox} voxels)."
                )
            else:
                text = (
                    f"{op[0]} with {label}: {secs:.2f} s ({n} interaction{plural}, {vox} voxels)."
                )
            self.status.setText(f"{text} Accept writes it to the class.")
            self.updated.emit(op[0], secs)

        def error(exc: BaseException) -> None:
            if session is not self.session:
                return
            if op[0] == "replay":  # the prompts stay; the next interaction tries again
                self._in_sync = False
                self.mask = None
                remove_layer(self.viewer, PREVIEW)
            elif record is not None:
                self._remove_prompt(record)
            label = self.method_label(session.backend)
            self._fail(f"Click-to-segment ({label}) on '{self._session_image}'", exc)

        def finished() -> None:
            self._worker = None
            self._pump()

        self._worker = start_worker(
            _run, session, op, on_done=done, on_error=error, on_finished=finished
        )

    @property
    def busy(self) -> bool:
        """Whether interactions are being computed or waiting."""
        return self._worker is not None or bool(self._queue)

    def _show_mask(self, mask: np.ndarray) -> None:
        image = self.image_layer()
        target = self.labels_layer()
        cid = int(self.class_spin.value())
        dtype = target.data.dtype if target is not None else np.min_scalar_type(max(cid, 255))
        like = target if target is not None and target.data.shape == mask.shape else image
        cmap = (
            target.colormap
            if like is target
            else {None: "#ff00ff", 0: "transparent", cid: default_colour(cid)}
        )
        preview = show_preview(
            self.viewer, PREVIEW, (mask * cid).astype(dtype), like=like, colormap=cmap
        )
        # keep the prompts drawn above the preview
        layers = self.viewer.layers
        prompts = [ly for ly in (self.points, self.boxes) if ly is not None and ly in layers]
        if prompts:
            lowest = min(layers.index(ly) for ly in prompts)
            if layers.index(preview) > lowest:
                layers.move(layers.index(preview), lowest)

    def _remove_prompt(self, record: dict) -> None:
        """Delete one prompt's row from its layer (indices of later rows shift down)."""
        if record not in self._prompts:
            return
        self._prompts.remove(record)
        layer = self.points if record["kind"] == "point" else self.boxes
        if layer is None or record["index"] >= len(layer.data):
            return
        self._syncing = True
        try:
            if record["kind"] == "point":
                layer.selected_data = set()
                layer.remove([record["index"]])
                colour_points(layer)
            else:
                layer.selected_data = {record["index"]}
                layer.remove_selected()
        finally:
            self._syncing = False
        for other in self._prompts:
            if other["kind"] == record["kind"] and other["index"] > record["index"]:
                other["index"] -= 1

    # ------------------------------------------------------------------ actions
    def undo_last(self) -> None:
        """Undo the latest interaction (its prompt disappears, the mask goes back)."""
        if not self._prompts:
            self.status.setText("Nothing to undo.")
            return
        self._remove_prompt(self._prompts[-1])
        self._enqueue(("undo",))

    def start_from_existing(self) -> None:
        """Start a new session from the chosen class's current mask in the Labels layer."""
        target = self.labels_layer()
        cid = int(self.class_spin.value())
        try:
            image = self.image_layer()
            if target is None:
                raise CxsegError("choose a Labels layer on the image's grid that has the class")
            check_same_grid(image, target)
            initial = np.asarray(target.data) == cid
            if not initial.any():
                raise CxsegError(f"class {cid} is empty in '{target.name}'")
        except Exception as exc:
            self._fail("Start from existing mask", exc)
            return
        self._queue.clear()
        self._clear_prompts()
        self._initial = initial.copy()
        if not self._enqueue(("reset", initial.copy())):
            self._initial = None

    def reset(self) -> None:
        """Forget every prompt and the mask."""
        self._queue.clear()
        self._clear_prompts()
        self._initial = None
        self._in_sync = True
        if self.session is not None:
            self._enqueue(("reset", None))
        self.mask = None
        remove_layer(self.viewer, PREVIEW)
        self.status.setText("Reset. Click on the next object.")

    def _clear_prompts(self) -> None:
        self._prompts.clear()
        self._syncing = True
        try:
            if self.points is not None and self.points in self.viewer.layers:
                self.points.data = np.zeros((0, self.points.ndim))
            if self.boxes is not None and self.boxes in self.viewer.layers:
                self.boxes.data = []
        finally:
            self._syncing = False

    def _drop_session(self) -> None:
        self._queue.clear()
        if self.session is not None and self.session.backend == "network":
            from ..models.guided import release_images

            release_images()
        self.session = None
        self._session_spec = None
        self._initial = None
        self._in_sync = True
        self.mask = None
        self._clear_prompts()
        remove_layer(self.viewer, PREVIEW)

    def accept(self) -> Any:
        """Write the current mask into the class as one undoable step; returns the layer."""
        if self.busy:
            self.status.setText("Still segmenting; Accept again when it is done.")
            return None
        if self.mask is None or self.session is None or not self.mask.any():
            self.status.setText("Nothing to accept yet: click on an object first.")
            return None
        cid = int(self.class_spin.value())
        try:
            target = self.labels_layer()
            if target is None:
                target = self._new_labels_layer(cid)
            check_same_grid(self.image_layer(), target)
            if target.data.shape != self.mask.shape:
                raise CxsegError(
                    f"'{target.name}' {target.data.shape} is not on the image's grid {self.mask.shape}"
                )
            if (
                np.issubdtype(target.data.dtype, np.integer)
                and cid > np.iinfo(target.data.dtype).max
            ):
                raise CxsegError(f"class {cid} does not fit '{target.name}' ({target.data.dtype})")
            new = np.array(target.data, copy=True)
            paint = (
                self.mask if not target.preserve_labels else self.mask & ((new == 0) | (new == cid))
            )
            if self.session.initial_mask is not None:  # refining: carved voxels leave the class
                new[(new == cid) & ~self.mask] = 0
            new[paint] = cid
            n = apply_array(target, new)
            if cid not in layer_classes(target):
                set_classes(target, layer_classes(target, present_ids(new)))
        except Exception as exc:
            self._fail("Accept", exc)
            return None
        self.labels_combo.setCurrentText(target.name)
        target.selected_label = cid
        self.status.setText(
            f"Accepted into class {cid} of '{target.name}' ({n} voxels changed; Ctrl+Z undoes it)."
        )
        self._clear_prompts()
        self.session.reset(None)
        self._initial = None
        self._in_sync = True
        self.mask = None
        remove_layer(self.viewer, PREVIEW)
        self.accepted.emit(target)
        return target

    def _new_labels_layer(self, cid: int):
        """A Labels layer on the image's grid and geometry, named after the image."""
        image = self.image_layer()
        classes = {cid: LabelClass(f"object {cid}", default_colour(cid))}
        layer = labels_layer_for_image(self.viewer, image, classes, f"{image.name} labels")
        self.viewer.layers.selection.active = self.points or layer
        return layer

    def _fail(self, context: str, exc: BaseException) -> None:
        notify_error(exc, context)
        self.status.setText(f"{context}: {exc}")
        self.failed.emit(f"{context}: {exc}")
