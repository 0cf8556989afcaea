"""Click-to-segment dock widget: positive/negative clicks and a box give one object's mask.

The prompts live in a Points layer (green = object, red = not the object; Shift+click or the
"negative" toggle for red) and a Shapes layer (a box). Every interaction runs
:class:`~napari_cxseg.editing.interactive.PromptSession` in a worker, and the result shows in a
preview layer; Accept writes it into the chosen class of a Labels layer as ONE undoable step.
In a volume one click on one slice gives the whole 3D structure.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGridLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..images import CxsegError, LabelClass, default_colour
from ._correct_tools import compact_combo
from ._jobs import start_worker
from ._layers import apply_array, fill_combo, image_from_layer, notify_error, set_classes
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
)

if TYPE_CHECKING:
    import napari

NEW_LAYER = "(new layer)"
PREVIEW = "cxseg interactive preview"


def _run(session: Any, op: tuple) -> tuple[np.ndarray, float]:
    """Apply one queued operation to the session (worker thread); returns (mask, seconds)."""
    t0 = time.perf_counter()
    kind = op[0]
    if kind == "point":
        mask = session.add_point(op[1], positive=op[2])
    elif kind == "box":
        mask = session.add_box(op[1])
    elif kind == "undo":
        mask = session.undo_last()
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
        self._queue: list[tuple] = []
        self._worker = None
        self._prompts: list[dict[str, Any]] = []  # prompt rows in the order they were added
        self._syncing = False
        self.points = None
        self.boxes = None
        self.mask: np.ndarray | None = None

        self.image_combo = compact_combo()
        self.labels_combo = compact_combo()
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
        self.image_combo.currentTextChanged.connect(self._on_image_changed)
        self.labels_combo.currentTextChanged.connect(self._on_labels_changed)
        self.class_spin.valueChanged.connect(self._on_class_changed)
        for ev in ("inserted", "removed", "reordered"):
            getattr(self.viewer.layers.events, ev).connect(self._refresh_layers)
        self._refresh_layers()

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
            click_adds_point(pts, self.negative.isChecked)
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
        self.status.setText("Click on the object; Shift+click marks what is not the object.")

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

    def _on_points_data(self, event: Any) -> None:
        if self._syncing or getattr(event, "action", None) != "added":
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
        if self._syncing or getattr(event, "action", None) != "added":
            return
        i = len(self.boxes.data) - 1
        self._queue_prompt("box", i, np.asarray(self.boxes.data[i]))

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
            arr = np.asarray(image.array, float) if image.channel_names is None else None
            if arr is None or arr.ndim not in (2, 3):
                raise CxsegError(f"'{layer.name}' must be a single-channel 2D or 3D image")
            self.session = PromptSession(arr, spacing=layer_spacing(layer))
        return self.session

    def _queue_prompt(self, kind: str, index: int, data: np.ndarray, positive: bool = True) -> None:
        record = {"kind": kind, "index": index}
        self._prompts.append(record)
        op = (
            ("point", np.asarray(data, float), positive)
            if kind == "point"
            else ("box", np.asarray(data, float))
        )
        self._enqueue(op, record)

    def _enqueue(self, op: tuple, record: dict | None = None) -> None:
        try:
            self._session()
        except Exception as exc:
            if record is not None:
                self._remove_prompt(record)
            self._fail("Click-to-segment", exc)
            return
        self._queue.append((op, record))
        self._pump()

    def _pump(self) -> None:
        if self._worker is not None or not self._queue:
            return
        op, record = self._queue.pop(0)
        self.status.setText("Segmenting...")

        def done(result: tuple[np.ndarray, float]) -> None:
            mask, secs = result
            self.mask = mask
            self._show_mask(mask)
            n = self.session.n_interactions if self.session is not None else 0
            vox = int(mask.sum())
            self.status.setText(
                f"{op[0]}: {secs:.2f} s ({n} interaction{'s' * (n != 1)}, {vox} voxels). "
                "Accept writes it to the class."
            )
            self.updated.emit(op[0], secs)

        def error(exc: BaseException) -> None:
            if record is not None:
                self._remove_prompt(record)
            self._fail(f"Click-to-segment on '{self._session_image}'", exc)

        def finished() -> None:
            self._worker = None
            self._pump()

        self._worker = start_worker(
            _run, self.session, op, on_done=done, on_error=error, on_finished=finished
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
        if not self._prompts or self.session is None:
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
            if target is None or target.data.shape != image.data.shape[: target.ndim]:
                raise CxsegError("choose a Labels layer on the image's grid that has the class")
            initial = np.asarray(target.data) == cid
            if not initial.any():
                raise CxsegError(f"class {cid} is empty in '{target.name}'")
        except Exception as exc:
            self._fail("Start from existing mask", exc)
            return
        self._clear_prompts()
        self._enqueue(("reset", initial.copy()))

    def reset(self) -> None:
        """Forget every prompt and the mask."""
        self._queue.clear()
        self._clear_prompts()
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
        self.session = None
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
