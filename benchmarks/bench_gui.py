"""GUI: Segment press to labels on screen, one click's mask on screen, and the event loop meanwhile.

In a real napari viewer (under ``xvfb-run -a`` when no display is set) the Segment widget
(:mod:`napari_cxseg.widgets.segment`) segments the bundled sample CT with ``ct-organs-demo`` and
a 2048 x 2500 radiograph with ``cxr-lungs``; the click widget (:mod:`napari_cxseg.widgets.interactive`)
takes clicks on the sample CT. A 10 ms ``QTimer`` runs all along: the longest gap between two of
its ticks, minus 10 ms, is how long the event loop was blocked. "Visible" is the first canvas
draw after the result layer arrived. The reference is the bare engine call in the same process
(a new ``Predictor`` and its ``predict``; a ``PromptSession`` click).

Each widget starts a background warm-up when it opens (:mod:`napari_cxseg.warmup`): the ticks
run from before the widget is made until that warm-up has ended, and that blocking is reported
as "widget open + warm-up"; the presses and clicks come after it. A press's blocking is also
split into the part while the worker computes and the part while the result layer is shown. The
click widget's "Click prompts" press (which makes the prompt layers) is measured on its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import Config, Row

TICK_MS = 10


class Ticker:
    """A 10 ms QTimer whose tick times tell how long the event loop was blocked."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.timer.start()

    def blocked_ms(self, t0: float, t1: float) -> dict[str, float]:
        """Longest and 95th-percentile extra delay (ms) between ticks in ``[t0, t1]``."""
        ts = np.array([t for t in self.ticks if t0 <= t <= t1] + [t1])
        ts = np.concatenate([[t0], ts])
        gaps = np.maximum(np.diff(ts) * 1000.0 - TICK_MS, 0.0)
        return {"max_blocked_ms": float(gaps.max(initial=0.0)), "p95_blocked_ms": float(np.percentile(gaps, 95)),
                "ticks": int(len(ts) - 2), "worst_at": float(ts[int(np.argmax(gaps))]) if len(gaps) else t0}


def wait_for(cond: Any, timeout: float) -> bool:
    """Run the event loop until ``cond()`` or ``timeout`` seconds."""
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        QApplication.processEvents()
        if cond():
            return True
        time.sleep(0.001)
    return bool(cond())


def _draws(viewer: Any) -> list[float]:
    times: list[float] = []
    try:
        viewer.window._qt_viewer.canvas._scene_canvas.events.draw.connect(
            lambda e: times.append(time.perf_counter()))
    except AttributeError:  # another napari layout: visible = result arrived
        pass
    return times


def _stamped(fn: Any, state: dict[str, Any], key: str) -> Any:
    """``fn`` that first notes the time it was called in ``state[key]``."""
    def call(*args: Any) -> Any:
        state[key] = time.perf_counter()
        return fn(*args)
    return call


def split_blocking(ticker: Ticker, t0: float, t_arrived: float, t_vis: float) -> dict[str, Any]:
    """Blocking while the worker computed (``t0`` to the result's arrival) and while it was shown."""
    return {"computing_max_blocked_ms": ticker.blocked_ms(t0, t_arrived)["max_blocked_ms"],
            "showing_max_blocked_ms": ticker.blocked_ms(t_arrived, t_vis)["max_blocked_ms"]}


def wait_warm_up(warm_up: Any, ticker: Ticker, t_open: float, timeout: float) -> dict[str, Any]:
    """Run the event loop until a widget's background warm-up has ended; the blocking meanwhile.

    ``warm_up`` is the widget's :class:`~napari_cxseg.warmup.WarmUp` (``None``: nothing was left
    to warm up, e.g. another widget did it): then the blocking of 0.5 s after the widget opened.
    """
    if warm_up is None:
        wait_for(lambda: False, 0.5)
    elif not wait_for(warm_up.done.is_set, timeout):
        raise RuntimeError(f"the widget's warm-up did not end in {timeout} s")
    wait_for(lambda: False, 0.1)
    t_end = time.perf_counter()
    blocked = ticker.blocked_ms(t_open, t_end)
    warm_steps = warm_up.steps if warm_up is not None else []
    steps = [{"step": st.name, "at_s": round(st.start - t_open, 3), "s": round(st.seconds, 3), "thread": st.thread,
              **({"error": st.error} if st.error else {})} for st in warm_steps]
    # the warm-up step that overlapped the worst gap most (None: the gap came from the widget itself)
    g0, g1 = blocked["worst_at"], blocked["worst_at"] + blocked["max_blocked_ms"] / 1000.0
    overlap = {st.name: min(g1, st.start + st.seconds) - max(g0, st.start) for st in warm_steps}
    during = [n for n, o in sorted(overlap.items(), key=lambda kv: -kv[1]) if o > 0]
    blocked["worst_at"] -= t_open
    return {"warm_up_s": 0.0 if warm_up is None else warm_up.ended - warm_up.started, "open_to_warm_s": t_end - t_open,
            "steps": steps, "worst_during": during[0] if during else None, **blocked}


def measure_segment(viewer: Any, layer: str, model: str, device: str = "cpu", presses: int = 2,
                    timeout: float = 900.0) -> dict[str, Any]:
    """Press Segment ``presses`` times; per press: seconds to the result and to its first draw, blocking."""
    from napari_cxseg.widgets.segment import SegmentWidget

    ticker = Ticker()
    wait_for(lambda: False, 0.1)
    t_open = time.perf_counter()
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w, name="bench segment")
    w.image_combo.setCurrentText(layer)
    w.model_combo.setCurrentText(model)
    w.device_combo.setCurrentText(device)
    opened = wait_warm_up(w.warm_up, ticker, t_open, timeout)
    draws = _draws(viewer)
    state: dict[str, Any] = {}
    w.finished_layer.connect(lambda ly: state.setdefault("t", time.perf_counter()))
    w.failed.connect(lambda m: state.setdefault("error", m))
    w._on_result = _stamped(w._on_result, state, "t_arrived")  # the result reaches the main thread
    out = []
    for _ in range(presses):
        state.clear()
        n_layers = len(viewer.layers)
        t0 = time.perf_counter()
        w.segment_btn.click()
        if not wait_for(lambda: "t" in state or "error" in state, timeout):
            raise RuntimeError(f"Segment with {model} on {layer}: no result in {timeout} s")
        if "error" in state:
            raise RuntimeError(f"Segment with {model} on {layer} failed: {state['error']}")
        t_res = state["t"]
        wait_for(lambda t_res=t_res: any(d >= t_res for d in draws), 3.0)
        seen = [d for d in draws if d >= t_res]
        t_vis = seen[0] if seen else t_res
        wait_for(lambda: w._worker is None, 10.0)
        out.append({"press_to_result_s": t_res - t0, "press_to_visible_s": t_vis - t0, "draw_seen": bool(seen),
                    "new_layer": len(viewer.layers) > n_layers, **ticker.blocked_ms(t0, t_vis),
                    **split_blocking(ticker, t0, state["t_arrived"], t_vis)})
        wait_for(lambda: False, 0.2)
    ticker.timer.stop()
    return {"open": opened, "presses": out}


def bare_predict(viewer: Any, layer: str, model: str, device: str = "cpu") -> float:
    """Seconds of the engine alone, as the widget calls it (a new Predictor, then predict)."""
    from napari_cxseg.inference import Predictor
    from napari_cxseg.widgets._layers import image_from_layer

    image = image_from_layer(viewer, viewer.layers[layer])
    t = time.perf_counter()
    Predictor(model, device=device).predict(image)
    return time.perf_counter() - t


def measure_clicks(viewer: Any, layer: str, points: list[tuple[int, ...]], method: str = "network",
                   timeout: float = 120.0) -> dict[str, Any]:
    """Clicks in the click widget: seconds from the click to the mask on screen, and blocking."""
    from napari_cxseg.widgets.interactive import InteractiveWidget

    ticker = Ticker()
    wait_for(lambda: False, 0.1)
    t_open = time.perf_counter()
    w = InteractiveWidget(viewer)
    viewer.window.add_dock_widget(w, name="bench clicks")
    w.image_combo.setCurrentText(layer)
    w.set_method(method)
    opened = wait_warm_up(w.warm_up, ticker, t_open, timeout)
    draws = _draws(viewer)
    done: list[float] = []
    w.updated.connect(lambda op, secs: done.append(time.perf_counter()))
    w.failed.connect(lambda m: done.append(-1.0))
    shown: dict[str, Any] = {}
    w._show_mask = _stamped(w._show_mask, shown, "t_arrived")
    t0 = time.perf_counter()  # "Click prompts": the prompt layers are made, as a user starts
    w.points_btn.click()
    wait_for(lambda: False, 0.5)
    prompts = ticker.blocked_ms(t0, time.perf_counter())
    out = []
    for p in points:
        n = len(done)
        t0 = time.perf_counter()
        w.add_point(p, positive=True)
        if not wait_for(lambda n=n: len(done) > n and not w.busy, timeout) or done[-1] < 0:
            raise RuntimeError(f"click at {p} on {layer} ({method}) gave no mask")
        t_res = done[-1]
        wait_for(lambda t_res=t_res: any(d >= t_res for d in draws), 2.0)
        seen = [d for d in draws if d >= t_res]
        t_vis = seen[0] if seen else t_res
        out.append({"click_to_visible_s": t_vis - t0, **ticker.blocked_ms(t0, t_vis),
                    **split_blocking(ticker, t0, shown["t_arrived"], t_vis)})
        wait_for(lambda: False, 0.2)
    ticker.timer.stop()
    return {"open": opened, "prompt_layers": prompts, "clicks": out, "method": method}


def gui_session(tiny: bool = False, device: str = "cpu", viewer: Any = None) -> dict[str, Any]:
    """All GUI measurements in one viewer (``viewer`` given by a test, else a shown one)."""
    import napari
    from bench_2d import resized_sample
    from scipy import ndimage as ndi

    from napari_cxseg import io as cxio
    from napari_cxseg.sample_data_files import sample_paths

    own = viewer is None
    if own:
        viewer = napari.Viewer(show=True)
    res: dict[str, Any] = {}
    try:
        ct_path, ct_lab = sample_paths("chest_ct")
        ct = viewer.open(str(ct_path), plugin="napari-cxseg")[0]
        cxr_size = (96, 112) if tiny else (2048, 2500)
        import tempfile

        cxr_path = resized_sample(Path(tempfile.mkdtemp(prefix="bench_gui_")), *cxr_size)
        cxr = viewer.open(str(cxr_path), plugin="napari-cxseg")[0]
        presses = 1 if tiny else 2
        for key, layer, model in (("ct", ct.name, "ct-organs-demo"), ("cxr", cxr.name, "cxr-lungs")):
            res[f"segment_{key}"] = measure_segment(viewer, layer, model, device, presses)
            res[f"segment_{key}"]["bare_predict_s"] = bare_predict(viewer, layer, model, device)
            res[f"segment_{key}"]["shape"] = list(viewer.layers[layer].data.shape)
        lab = cxio.read(ct_lab)[0]
        ids = {c.name: k for k, c in lab.classes.items()}
        pts = []
        for organ in ("liver", "spleen") if not tiny else ("spleen",):
            m = np.asarray(lab.array) == ids[organ]
            dt = ndi.distance_transform_edt(m)
            pts.append(tuple(int(i) for i in np.unravel_index(np.argmax(dt), m.shape)))
        viewer.layers.selection.active = ct
        res["clicks_ct"] = measure_clicks(viewer, ct.name, pts[:1] * (1 if tiny else 3))
    finally:
        if own:
            viewer.close()
    return res


def _split_note(p: dict[str, Any]) -> str:
    return (f"95th percentile {p['p95_blocked_ms']:.0f} ms; while computing {p['computing_max_blocked_ms']:.0f} ms, "
            f"while showing the result {p['showing_max_blocked_ms']:.0f} ms")


def _open_row(what: str, widget: str, o: dict[str, Any]) -> Row:
    steps = o.get("steps") or []
    slow = sorted(steps, key=lambda st: -st["s"])[:3]
    note = (f"warm-up {o['warm_up_s']:.1f} s in thread {steps[0]['thread']!r}, slowest steps: "
            + ", ".join(f"{st['step']} {st['s']:.1f} s" for st in slow) if steps else "nothing left to warm up")
    return Row("gui", f"event loop blocked, {what} opens + its background warm-up", widget, o["max_blocked_ms"],
               unit="ms", target="<= 100 ms", met=o["max_blocked_ms"] <= 100.0,
               note=f"95th percentile {o['p95_blocked_ms']:.0f} ms; worst gap during "
                    f"{o.get('worst_during') or 'no warm-up step (the widget itself)'}; {note}")


def rows_for(res: dict[str, Any]) -> list[Row]:
    rows = []
    for key, what in (("ct", "sample CT, ct-organs-demo"), ("cxr", "radiograph, cxr-lungs")):
        r = res.get(f"segment_{key}")
        if not r:
            continue
        last = r["presses"][-1]
        shape = "x".join(map(str, r["shape"][::-1]))
        rows.append(Row("gui", f"Segment press to labels visible ({what}, {shape})",
                        "Segment widget", last["press_to_visible_s"], "engine alone (new Predictor + predict)",
                        r["bare_predict_s"], "s", note=f"first press {r['presses'][0]['press_to_visible_s']:.2f} s; "
                        f"draw seen: {last['draw_seen']}"))
        if "open" in r:
            rows.append(_open_row(f"Segment widget ({key})", "Segment widget", r["open"]))
        first, later = r["presses"][0], r["presses"][1:]
        made = "a new Labels layer" if first.get("new_layer") else "into an existing layer"
        rows.append(Row("gui", f"event loop blocked, first Segment ({key}; result in {made})",
                        "Segment widget", first["max_blocked_ms"], unit="ms", target="<= 100 ms",
                        met=first["max_blocked_ms"] <= 100.0, note=_split_note(first)))
        if later:
            worst = max(later, key=lambda p: p["max_blocked_ms"])
            rows.append(Row("gui", f"event loop blocked, later Segment presses ({key}; result into the same layer)",
                            "Segment widget", worst["max_blocked_ms"], unit="ms", target="<= 100 ms",
                            met=worst["max_blocked_ms"] <= 100.0, note=_split_note(worst)))
    c = res.get("clicks_ct")
    if c:
        times = [k["click_to_visible_s"] for k in c["clicks"]]
        rows.append(Row("gui", f"click to mask visible (sample CT, {c['method']}), after the first", "click widget",
                        float(np.median(times[1:] or times)), unit="s",
                        note=f"clicks: {' '.join(f'{t:.2f}' for t in times)} s"))
        if "open" in c:
            rows.append(_open_row("click widget", "click widget", c["open"]))
        if "prompt_layers" in c:
            p = c["prompt_layers"]
            rows.append(Row("gui", "event loop blocked, 'Click prompts' press (napari makes the prompt layers)",
                            "click widget", p["max_blocked_ms"], unit="ms", target="<= 100 ms",
                            met=p["max_blocked_ms"] <= 100.0, note=f"95th percentile {p['p95_blocked_ms']:.0f} ms"))
        first = c["clicks"][0]
        rows.append(Row("gui", "event loop blocked, first click (result in a new preview layer)", "click widget",
                        first["max_blocked_ms"], unit="ms", target="<= 100 ms", met=first["max_blocked_ms"] <= 100.0,
                        note=_split_note(first) if "computing_max_blocked_ms" in first else ""))
        if len(c["clicks"]) > 1:
            worst = max(c["clicks"][1:], key=lambda k: k["max_blocked_ms"])
            rows.append(Row("gui", "event loop blocked, later clicks (preview updated)", "click widget",
                            worst["max_blocked_ms"], unit="ms", target="<= 100 ms", met=worst["max_blocked_ms"] <= 100.0,
                            note=_split_note(worst) if "computing_max_blocked_ms" in worst else ""))
    return rows


def run(cfg: Config) -> tuple[list[Row], dict[str, Any]]:
    """The GUI part, in a child process under Xvfb (a display of its own)."""
    out = cfg.out / "gui.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "child", str(out), cfg.device] + (["--tiny"] if cfg.tiny else [])
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24"] + cmd
    cfg.log("[gui] napari viewer: Segment widget and clicks")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if res.returncode != 0 or not out.exists():
        raise RuntimeError(f"GUI benchmark failed (rc {res.returncode}):\n{res.stdout[-1500:]}\n{res.stderr[-2500:]}")
    data = json.loads(out.read_text())
    return rows_for(data), data


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "child":
        import warnings

        warnings.filterwarnings("ignore")
        data = gui_session(tiny="--tiny" in sys.argv, device=sys.argv[3])
        Path(sys.argv[2]).write_text(json.dumps(data, indent=1))
    else:
        print("run through benchmarks/run_benchmarks.py", file=sys.stderr)
        sys.exit(2)
