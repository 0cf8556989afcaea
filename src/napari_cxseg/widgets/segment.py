"""Segment dock widget: image layer + model -> a named, coloured, editable Labels layer.

The work runs in a napari generator worker (progress + Cancel); the viewer stays responsive.
A result is never dropped and never silently replaces a Labels layer the user has edited
(:mod:`._segment_result` decides where it goes). NaN/Inf in the image are replaced, with a
warning; a radiograph whose file records no orientation is named as such.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..device import PRECISION_CHOICES
from ..models.onnx_runtime import RUNTIME_CHOICES
from ._jobs import create_job
from ._layers import (
    add_label_map,
    apply_array,
    fill_combo,
    image_from_layer,
    notify_error,
    set_classes,
)
from ._segment_result import (
    names_sides,
    orientation_line,
    plan_result,
    stamp_output,
    unique_name,
)

if TYPE_CHECKING:
    import napari

OTHER_MODEL = "Other (bundle / card file)..."


def _segment_job(image, card, device: str, trust: bool, largest_component: bool | None, precision: str = "auto",
                 runtime: str = "auto"):
    """Generator run in a worker: yields (done, total), returns the LabelMap."""
    from ..inference import Predictor

    predictor = Predictor(card, device=device, trust=trust, largest_component=largest_component,
                          precision=precision, runtime=runtime, background_export=True)
    gen = predictor.iter_predict(image)
    while True:
        try:
            step = next(gen)
        except StopIteration as stop:
            return stop.value
        yield step


def explain_error(exc: BaseException) -> str:
    """One line telling the user what happened and what to do."""
    text = str(exc) or type(exc).__name__
    if "out of memory" in text.lower() or type(exc).__name__ == "OutOfMemoryError":
        return f"ran out of memory ({text.splitlines()[0]}). Try device 'cpu' or a smaller image."
    return text


class SegmentWidget(QWidget):
    """Pick an image layer and a model, press Segment, get a Labels layer."""

    #: emitted with the Labels layer that received a result
    finished_layer = Signal(object)
    #: emitted with the error message when a run fails
    failed = Signal(str)

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._worker = None
        self._pbar = None
        self._extra_model_path: str | None = None
        self._cards: dict = {}  # name -> card, as listed last (the chooser's details read them)

        self.image_combo = QComboBox()
        self.model_combo = QComboBox()
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(list(PRECISION_CHOICES))
        self.precision_combo.setToolTip(
            "auto: float16 on CUDA, float32 elsewhere. bfloat16: about 2x faster on CPUs with AMX "
            "(recent Intel Xeon); labels can differ in a few boundary voxels."
        )
        self.runtime_combo = QComboBox()
        self.runtime_combo.addItems(list(RUNTIME_CHOICES))
        self.runtime_combo.setToolTip(
            "auto: 2D networks in ONNX Runtime on CPU in float32 when installed (about 0.75x of PyTorch's time; the network "
            "is exported once to the cache, in a background process while this run uses PyTorch, and checked "
            "against PyTorch; a few near-tie voxels may differ), "
            "PyTorch otherwise. torch: PyTorch's own labels."
        )
        self.largest_cc = QCheckBox("keep largest component per class")
        self.largest_cc.setChecked(True)
        self.card_info = QLabel()
        self.card_info.setWordWrap(True)
        self.orientation_info = QLabel()
        self.orientation_info.setWordWrap(True)
        self.orientation_info.setVisible(False)
        self.segment_btn = QPushButton("Segment")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow(self.orientation_info)
        form.addRow("Model", self.model_combo)
        form.addRow("Device", self.device_combo)
        form.addRow("Precision", self.precision_combo)
        form.addRow("Runtime", self.runtime_combo)
        form.addRow(self.largest_cc)
        buttons = QHBoxLayout()
        buttons.addWidget(self.segment_btn)
        buttons.addWidget(self.cancel_btn)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.card_info)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.segment_btn.clicked.connect(self.run)
        self.cancel_btn.clicked.connect(self.cancel)
        self.model_combo.currentTextChanged.connect(self._on_model_changed)
        self.image_combo.currentTextChanged.connect(self._show_orientation)
        for ev in ("inserted", "removed", "reordered"):
            getattr(self.viewer.layers.events, ev).connect(self._refresh_images)
        self._refresh_images()
        self._refresh_models()
        from ._train_models import model_events

        model_events().changed.connect(self._on_models_changed)
        from ._warmup import warm_for_segment

        self.warm_up = warm_for_segment()  # torch/MONAI load now, not on the first press

    # ------------------------------------------------------------------ choices
    def _refresh_images(self, event=None) -> None:
        from napari.layers import Image as ImageLayer

        names = [ly.name for ly in self.viewer.layers if isinstance(ly, ImageLayer)]
        fill_combo(self.image_combo, names, prefer=len(names) - 1)
        self._show_orientation()

    def _show_orientation(self, *args) -> str:
        """Show (under the image) whether the radiograph's orientation came from its file."""
        name = self.image_combo.currentText()
        layer = self.viewer.layers[name] if name and name in self.viewer.layers else None
        text, unknown = orientation_line(layer)
        self.orientation_info.setText(f"⚠ {text}" if unknown else text)
        self.orientation_info.setStyleSheet("color: #e8a33d;" if unknown else "")
        self.orientation_info.setVisible(bool(text))
        return text if unknown else ""

    def _on_models_changed(self, name: str) -> None:
        """A card was registered or re-pointed (Train widget): list it now, keep the current choice."""
        self._refresh_models()

    def _refresh_models(self) -> None:
        from ..models.cards import list_cards

        current = self.model_combo.currentText()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        try:
            cards = list_cards()
        except Exception as exc:  # a broken user card must not kill the widget
            cards = []
            notify_error(exc, "Reading model cards")
        self._cards = {card.name: card for card in cards}
        for card in cards:
            self.model_combo.addItem(card.name)
        if self._extra_model_path:
            self.model_combo.addItem(self._extra_model_path)
        self.model_combo.addItem(OTHER_MODEL)
        if current and current != OTHER_MODEL and self.model_combo.findText(current) >= 0:
            self.model_combo.setCurrentText(current)
        self.model_combo.blockSignals(False)
        self._on_model_changed(self.model_combo.currentText())

    def _on_model_changed(self, text: str) -> None:
        if text == OTHER_MODEL:
            path = self._choose_model_path()
            if not path:
                self.model_combo.setCurrentIndex(0)
                return
            self._extra_model_path = path
            self.model_combo.blockSignals(True)
            self.model_combo.insertItem(self.model_combo.count() - 1, path)
            self.model_combo.setCurrentText(path)
            self.model_combo.blockSignals(False)
            text = path
        try:
            from ..models.cards import find_card

            card = self._cards.get(text) or find_card(text)  # not every card file read again
            self.largest_cc.setChecked(bool(card.output.largest_component))
            self.card_info.setText(
                f"{card.task}\nModality: {', '.join(card.modality)} · classes: "
                + ", ".join(c.name for c in card.classes.values())
                + f"\n{card.intended_use}"
            )
        except Exception as exc:
            self.card_info.setText(f"{exc}")

    def _choose_model_path(self) -> str:  # pragma: no cover - needs a human
        path = QFileDialog.getExistingDirectory(self, "MONAI bundle folder")
        if not path:
            path, _ = QFileDialog.getOpenFileName(
                self, "Model card, bundle zip or TorchScript", "", "Models (*.yaml *.yml *.zip *.ts)"
            )
        return path

    def _confirm_trust(self, card) -> bool:
        """Ask before running a model whose files hold code (bundle expressions, TorchScript)."""
        from ..models.trust import trust_findings

        reasons = "\n".join(f"\u2022 {f}" for f in trust_findings(card)[:3])
        answer = QMessageBox.question(
            self,
            "Run code from this model?",
            f"Running '{card.name}' runs code from its files:\n{reasons}\n\n"
            "Run it only if you trust its source. Run it?",
        )
        return answer == QMessageBox.StandardButton.Yes

    def _ask_replace(self, name: str) -> str:
        """'replace', 'new' or 'cancel' for a result over a Labels layer the user edited.

        Closing the box (Escape) keeps both: the result goes to a new layer.
        """
        box = QMessageBox(self)
        box.setWindowTitle("Labels were edited")
        box.setText(f"'{name}' has edits that a new result would replace.")
        replace = box.addButton("Replace (undoable)", QMessageBox.ButtonRole.DestructiveRole)
        new = box.addButton("New layer", QMessageBox.ButtonRole.AcceptRole)
        discard = box.addButton("Discard result", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(new)
        box.setEscapeButton(new)
        box.exec()
        clicked = box.clickedButton()
        return "replace" if clicked is replace else "cancel" if clicked is discard else "new"

    # ------------------------------------------------------------------ run
    def run(self) -> None:
        """Start segmenting the chosen image with the chosen model in a worker."""
        from napari.utils import progress

        from ..models.cards import find_card
        from ..models.trust import requires_trust

        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            self._fail("Choose an image layer first.")
            return
        model = self.model_combo.currentText()
        try:
            card = find_card(model)
            image = image_from_layer(self.viewer, self.viewer.layers[name])
        except Exception as exc:
            self._fail(f"Cannot segment '{name}' with '{model}': {explain_error(exc)}")
            return
        trust = False
        if requires_trust(card):
            if not self._confirm_trust(card):
                self.status.setText("Not run: model not trusted.")
                return
            trust = True

        replaced = int(image.meta.get("non_finite_replaced", 0))
        self._job = {"image_layer": name, "card": card, "orientation": self._show_orientation()}
        self.segment_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText(
            f"Segmenting '{name}' with {card.name}..."
            + (f" ({replaced} NaN/Inf values replaced)" if replaced else "")
        )
        self._pbar = progress(total=0, desc=f"CXSeg {card.name}")
        worker = create_job(
            _segment_job,
            image,
            card,
            self.device_combo.currentText(),
            trust,
            self.largest_cc.isChecked(),
            self.precision_combo.currentText(),
            self.runtime_combo.currentText(),
            _ignore_errors=True,
        )
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_result)
        worker.errored.connect(self._on_error)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()

    def cancel(self) -> None:
        """Ask the running job to stop at its next window batch."""
        if self._worker is not None:
            self.status.setText("Cancelling...")
            self._worker.quit()

    def _on_progress(self, step) -> None:
        done, total = step
        self.progress.setRange(0, max(int(total), 1))
        self.progress.setValue(int(done))
        if self._pbar is not None:
            self._pbar.total = int(total)
            self._pbar.n = int(done)
            self._pbar.refresh()

    def _on_result(self, label_map) -> None:
        card = self._job["card"]
        name = f"{self._job['image_layer']} [{card.name}]"
        try:
            layer, note = self._place(label_map, name)
        except Exception as exc:  # never drop a result: it still gets a layer of its own
            layer, note = None, ""
            try:
                layer = add_label_map(self.viewer, label_map, unique_name(self.viewer, name))
                stamp_output(layer, card.name)
                note = f" Could not write into '{name}' ({explain_error(exc)}): added as a new layer."
            except Exception as exc2:
                self._fail(f"Showing the result of '{card.name}' failed: {explain_error(exc2)}")
                return
        if layer is None:
            self.status.setText(f"Result discarded as asked; '{name}' kept as it was.")
            return
        self.viewer.layers.selection.active = layer
        layer.mode = "paint"
        counts = np.bincount(np.asarray(layer.data).ravel().astype(np.int64))
        found = [c.name for k, c in label_map.classes.items() if k < len(counts) and counts[k]]
        text = f"Done: '{layer.name}' ({', '.join(found) or 'nothing found'}).{note}"
        self._job["done"] = True
        orientation = (self._job.get("orientation") or "").rstrip(".")
        if orientation and names_sides(label_map.classes):
            from napari.utils.notifications import show_warning

            text += f"\n{orientation}. Check the left/right names before relying on them."
            show_warning(
                f"{orientation}. '{card.name}' named left and right in '{layer.name}' by that "
                "assumption."
            )
        self.status.setText(text)
        self.finished_layer.emit(layer)

    def _place(self, label_map, name: str):
        """Put a result into the viewer: ``(layer, note)``; ``(None, "")`` when discarded."""
        card = self._job["card"]
        plan = plan_result(self.viewer, name, label_map)
        layer, note = plan.layer, f" {plan.reason}: added as a new layer." if plan.reason else ""
        if layer is not None and plan.ask:
            choice = self._ask_replace(layer.name)
            if choice == "cancel":
                return None, ""
            if choice == "new":
                layer = None
                plan.name = unique_name(self.viewer, name)
        if layer is None:
            layer = add_label_map(self.viewer, label_map, plan.name)
        else:
            apply_array(layer, label_map.array)  # one undo step: Ctrl+Z brings the old labels back
            set_classes(layer, label_map.classes)
        stamp_output(layer, card.name)
        return layer, note

    def _on_error(self, exc: BaseException) -> None:
        card = self._job["card"].name if getattr(self, "_job", None) else "?"
        image = self._job["image_layer"] if getattr(self, "_job", None) else "?"
        self._fail(f"Segmenting '{image}' with '{card}' failed: {explain_error(exc)}")

    def _on_aborted(self) -> None:
        self.status.setText("Cancelled; no layer was changed.")

    def _on_finished(self) -> None:
        self._worker = None
        self.segment_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        self.progress.setRange(0, 1)
        # a full bar after a result, an empty one after a cancel or an error
        self.progress.setValue(1 if getattr(self, "_job", {}).get("done") else 0)
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None

    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(message)
        show_error(message)
        self.failed.emit(message)
