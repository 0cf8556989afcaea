"""Background warm-up when a model widget opens, so that the first Segment press or click does
not stall the viewer (see :mod:`napari_cxseg.warmup`).

Besides the engine's imports, a first result makes napari import pandas (the layer's features
table) and scipy's linear algebra, and vispy build its line dash patterns: on the main thread,
while the user waits. Those are warmed here too, in the same background thread.
"""

from __future__ import annotations

from ..warmup import CLICK_MODULES, PREDICT_MODULES, Task, WarmUp, start_warm_up

#: seconds to wait after the widget is made: the dock is built and painted first
DELAY_S = 0.5
#: what a first Labels / Points layer makes napari import on the main thread
NAPARI_MODULES: tuple[str, ...] = ("pandas", "scipy.linalg", "vispy.visuals.line.dash_atlas")


def _dash_patterns() -> None:
    """Compute vispy's dash patterns (cached by vispy; every new line visual needs them)."""
    from vispy.visuals.line.dash_atlas import DashAtlas

    DashAtlas()


NAPARI_TASKS: tuple[Task, ...] = (("vispy dash patterns", _dash_patterns),)


def warm_for_segment() -> WarmUp | None:
    """Warm up what a first prediction and its result layer need (once per process)."""
    return start_warm_up((*NAPARI_MODULES, *PREDICT_MODULES), NAPARI_TASKS, delay_s=DELAY_S)


def warm_for_clicks(ndim: int | None, method: str) -> WarmUp | None:
    """Warm up what a first click needs: imports, and the click network for ``ndim``-D images."""
    tasks: list[Task] = list(NAPARI_TASKS)
    if method == "network" and ndim in (2, 3):

        def load_network() -> None:
            from ..models.guided import DEFAULT_NETS, get_segmenter

            get_segmenter(DEFAULT_NETS[ndim], "auto")

        tasks.append((f"click network {ndim}D", load_network))
    return start_warm_up((*NAPARI_MODULES, *CLICK_MODULES), tasks, delay_s=DELAY_S)
