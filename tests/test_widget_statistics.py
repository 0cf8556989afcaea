"""The statistics dock widget: known sizes on an anisotropic grid, live refresh, CSV export."""

from __future__ import annotations

import csv

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_volume_intensity_centroid_refresh_and_csv(make_napari_viewer, qtbot, tmp_path):
    from napari_cxseg.widgets._layers import apply_array
    from napari_cxseg.widgets.statistics import StatisticsWidget

    viewer = make_napari_viewer()
    spacing, origin = (2.5, 0.5, 0.5), (-100.0, 10.0, 20.0)
    image = np.zeros((8, 40, 40), np.float32)
    image[:] = np.arange(8, dtype=np.float32)[:, None, None] * 10.0  # intensity = 10 * z
    viewer.add_image(image, scale=spacing, translate=origin, name="ct")
    data = np.zeros(image.shape, np.uint8)
    data[2:6, 10:30, 0:20] = 1  # 4 * 20 * 20 = 1600 voxels of 0.625 mm³ = 1.0 mL
    data[0, 0:2, 0:2] = 2
    layer = viewer.add_labels(data, scale=spacing, translate=origin, name="tumour")
    layer.features = {"index": [0, 1, 2], "name": ["background", "tumour", "speck"]}
    w = StatisticsWidget(viewer)
    assert w.labels_combo.currentText() == "tumour"
    w.image_combo.setCurrentText("ct")
    with qtbot.waitSignal(w.refreshed, timeout=10000):
        w.refresh()

    row = w.rows[0]
    assert row["name"] == "tumour" and row["voxels"] == 1600
    assert row["volume_ml"] == pytest.approx(1.0)
    assert row["mean"] == pytest.approx(35.0) and row["min"] == 20.0 and row["max"] == 50.0
    assert row["std"] == pytest.approx(np.std([20, 30, 40, 50]))
    assert (row["bbox_z_start"], row["bbox_z_stop"]) == (2, 6)
    assert row["centroid_z_mm"] == pytest.approx(-100.0 + 3.5 * 2.5)  # world, not index
    assert row["centroid_y_mm"] == pytest.approx(10.0 + 19.5 * 0.5)
    assert row["centroid_x_mm"] == pytest.approx(20.0 + 9.5 * 0.5)
    headers = [w.table.horizontalHeaderItem(c).text() for c in range(w.table.columnCount())]
    assert "Volume (mL)" in headers
    assert w.table.item(0, headers.index("Volume (mL)")).text() == "1.000"
    assert w.table.item(0, 0).text() == "1: tumour"

    qtbot.waitUntil(lambda: w.histogram.counts.sum() == 1600, timeout=10000)  # row 0 selected

    # painting (here one undoable write) refreshes the table by itself
    new = np.array(layer.data)
    new[6, 10:30, 0:20] = 1
    with qtbot.waitSignal(w.refreshed, timeout=10000):
        apply_array(layer, new)
    assert w.rows[0]["voxels"] == 2000 and w.rows[0]["volume_ml"] == pytest.approx(1.25)

    out = w.export_csv(tmp_path / "stats.csv")
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["tumour", "speck"]
    assert float(rows[0]["volume_ml"]) == pytest.approx(1.25)
    assert float(rows[1]["voxels"]) == 4


def test_2d_area_without_image(make_napari_viewer, qtbot):
    from napari_cxseg.widgets.statistics import StatisticsWidget

    viewer = make_napari_viewer()
    data = np.zeros((20, 20), np.uint8)
    data[:10, :4] = 1  # 40 px of 0.2 x 0.3 mm = 2.4 mm²
    viewer.add_labels(data, scale=(0.2, 0.3), name="lung")
    w = StatisticsWidget(viewer)
    with qtbot.waitSignal(w.refreshed, timeout=10000):
        w.refresh()
    assert w.rows[0]["area_mm2"] == pytest.approx(2.4)
    assert w.table.horizontalHeaderItem(2).text() == "Area (mm²)"
    assert w.table.item(0, 3).text() == "-"  # no image: no intensities
