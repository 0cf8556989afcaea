"""The main job: open the bundled sample CXR and CT, segment them, save labels and screenshots.

With a display (or under Xvfb) it drives the real napari viewer and the Segment widget; with
no display at all it runs the same engine headless and renders overlays itself.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

DEMO_CASES = (
    # (sample key, model card, reference class pairs {model class name: reference class name})
    ("chest_xray", "cxr-lungs"),
    ("chest_ct", "ct-organs-demo"),
)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return float(2 * np.logical_and(a, b).sum() / s) if s else 1.0


def score_against_reference(pred, ref) -> dict[str, float]:
    """Dice per class name shared by a prediction and a reference LabelMap."""
    ref_ids = {c.name.lower(): k for k, c in ref.classes.items()}
    out = {}
    for k, c in pred.classes.items():
        rk = ref_ids.get(c.name.lower())
        if rk is not None and pred.array.shape == ref.array.shape:
            out[c.name] = round(_dice(pred.array == k, ref.array == rk), 4)
    return out


def _gui_available() -> bool:
    if os.environ.get("CXSEG_DEMO_HEADLESS") == "1":
        return False
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_demo(output: Path) -> int:
    """Segment the sample data and write labels, screenshots and a summary to ``output``.

    Returns
    -------
    int
        Process exit code (0 on success).
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    summary = _run_gui(output) if _gui_available() else _run_headless(output)
    summary["click_to_segment"] = _click_demo()
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    for case in summary["cases"]:
        print(
            f"[demo] {case['sample']}: {case['model']} in {case['seconds']:.2f} s -> "
            f"{case['labels']} ; Dice vs reference {case['dice']}"
        )
    for c in summary["click_to_segment"]:
        print(
            f"[demo] click-to-segment ({c['method']}) {c['sample']} {c['object']}: Dice after each "
            f"click {c['dice_per_click']}, {c['seconds_per_click']} s per click"
        )
    print(f"[demo] screenshots: {', '.join(summary['screenshots'])}")
    return 0


#: (sample, objects) clicked in the demo with the shipped click-guided networks
CLICK_CASES = (("chest_xray", ("right lung", "left lung")), ("chest_ct", ("heart", "spleen")))


def _click_demo(n_clicks: int = 3) -> list[dict]:
    """Simulated clicks (deepest point, then the largest error) on sample objects."""
    from .editing.interactive import simulate_clicks

    out = []
    for key, objects in CLICK_CASES:
        image, ref = _sample_objects(key)
        ids = {c.name: k for k, c in ref.classes.items()}
        for name in objects:
            res = simulate_clicks(
                image.array, ref.array == ids[name], image.geometry.spacing, n_clicks, "network"
            )
            out.append({
                "sample": key, "object": name, "method": "click-guided network",
                "dice_per_click": [round(d, 3) for d, _ in res],
                "seconds_per_click": [round(t, 2) for _, t in res],
            })
    return out


def _sample_objects(key: str):
    """(Image, reference LabelMap) of a bundled sample."""
    from .images import Image, LabelMap
    from .io import read
    from .sample_data_files import sample_paths

    image_path, labels_path = sample_paths(key)
    image = next(o for o in read(image_path) if isinstance(o, Image))
    ref = next(o for o in read(labels_path) if isinstance(o, LabelMap))
    return image, ref


def _save_labels(label_map, output: Path, key: str) -> Path:
    from .io import write_labels

    ext = ".png" if label_map.geometry.frame == "image" else ".nii.gz"
    path = output / f"{key}_{label_map.meta.get('model', 'labels')}{ext}"
    write_labels(label_map, path, overwrite=True)
    return path


def _run_headless(output: Path) -> dict:
    from .inference import Predictor
    from .models.cards import find_card

    cases, shots = [], []
    for key, model in DEMO_CASES:
        image, ref = _sample_objects(key)
        t0 = time.perf_counter()
        pred = Predictor(find_card(model), device="auto").predict(image)
        seconds = time.perf_counter() - t0
        path = _save_labels(pred, output, key)
        shot = output / f"{key}_overlay.png"
        render_overlay(image, pred, shot)
        shots.append(str(shot))
        cases.append(
            {"sample": key, "model": model, "seconds": seconds, "labels": str(path),
             "dice": score_against_reference(pred, ref), "mode": "headless"}
        )
    return {"cases": cases, "screenshots": shots}


def _run_gui(output: Path) -> dict:
    import napari

    from .widgets._layers import label_map_from_layer
    from .widgets.segment import SegmentWidget

    viewer = napari.Viewer(title="napari-cxseg demo")
    viewer.window.resize(1500, 950)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment", area="right")
    cases, shots = [], []
    for key, model in DEMO_CASES:
        for layer in list(viewer.layers):
            viewer.layers.remove(layer)
        layers = viewer.open_sample("napari-cxseg", key)
        image_layer = next(ly for ly in layers if ly._type_string == "image")
        ref_layer = next(ly for ly in layers if ly._type_string == "labels")
        ref_layer.visible = False
        widget._refresh_images()
        widget.image_combo.setCurrentText(image_layer.name)
        widget.model_combo.setCurrentText(model)

        t0 = time.perf_counter()
        result = _run_widget(widget)
        seconds = time.perf_counter() - t0
        if "error" in result or "layer" not in result:
            raise RuntimeError(f"demo segmentation of {key} failed: {result.get('error', 'timeout')}")
        pred = label_map_from_layer(result["layer"])
        pred.meta["model"] = model
        path = _save_labels(pred, output, key)
        if image_layer.ndim == 3:
            # show an axial slice through the middle of what was found
            zs = np.nonzero(np.asarray(result["layer"].data).any(axis=(1, 2)))[0]
            z = int(np.median(zs)) if zs.size else image_layer.data.shape[0] // 2
            viewer.dims.set_point(0, image_layer.data_to_world([z, 0, 0])[0])
        viewer.reset_view()
        shot = output / f"{key}_viewer.png"
        viewer.screenshot(str(shot), canvas_only=False)
        shots.append(str(shot))
        ref = label_map_from_layer(ref_layer)
        cases.append(
            {"sample": key, "model": model, "seconds": seconds, "labels": str(path),
             "dice": score_against_reference(pred, ref), "mode": "napari"}
        )
    viewer.close()
    return {"cases": cases, "screenshots": shots}


def _run_widget(widget, timeout_ms: int = 600_000) -> dict:
    """Press Segment and wait (running the Qt event loop) for the result or the error."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    result: dict = {}

    def done(layer) -> None:
        result["layer"] = layer
        loop.quit()

    def failed(message: str) -> None:
        result["error"] = message
        loop.quit()

    widget.finished_layer.connect(done)
    widget.failed.connect(failed)
    QTimer.singleShot(timeout_ms, loop.quit)
    widget.run()
    if not result:
        loop.exec()
    widget.finished_layer.disconnect(done)
    widget.failed.disconnect(failed)
    from qtpy.QtWidgets import QApplication

    deadline = time.perf_counter() + 30
    while widget._worker is not None and time.perf_counter() < deadline:
        QApplication.processEvents()  # let the worker finish so the buttons are reset
        time.sleep(0.01)
    return result


def render_overlay(image, label_map, path: Path) -> Path:
    """Write a PNG of the image (middle slice of the labelled region) with label colours on top."""
    from PIL import Image as PILImage

    img = np.asarray(image.array, float)
    lab = np.asarray(label_map.array)
    if img.ndim == 3:
        zs = np.nonzero(lab.any(axis=(1, 2)))[0]
        z = int(np.median(zs)) if zs.size else img.shape[0] // 2
        img, lab = img[z], lab[z]
    lo, hi = np.percentile(img, [1, 99])
    grey = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for k in np.unique(lab):
        if k == 0:
            continue
        colour = label_map.colour_of(int(k)).lstrip("#")
        c = np.array([int(colour[i : i + 2], 16) / 255 for i in (0, 2, 4)])
        m = lab == k
        rgb[m] = 0.5 * rgb[m] + 0.5 * c
    PILImage.fromarray((rgb * 255).astype(np.uint8)).save(path)
    return path
