"""Smoke test of the benchmark suite (benchmarks/): every part runs on tiny inputs.

No timing is asserted (speed is what the benchmarks report, never what tests check); the test
only makes sure that the suite still imports and that each part produces its rows, its JSON
and the growth plot, so that a change in the engine cannot silently break the benchmarks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

pytestmark = pytest.mark.slow


@pytest.fixture
def cfg(tmp_path):
    from _common import Config

    return Config(out=tmp_path / "bench", tiny=True, repeats=1, n_radiographs=2, log=lambda m: None)


def test_common_measure_and_agreement(tmp_path):
    from _common import Row, dice_agreement, measure

    info = measure([sys.executable, "-c", "import numpy; x = numpy.ones(10**7); print('ok')"])
    assert info["rc"] == 0 and info["peak_rss_mb"] > 50 and "ok" in info["stdout"]
    with pytest.raises(RuntimeError, match="failed"):
        measure([sys.executable, "-c", "raise SystemExit(3)"])
    a = np.zeros((4, 4), int)
    a[:2] = 1
    assert dice_agreement(a, a) == 1.0
    assert dice_agreement(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    assert dice_agreement(a, np.zeros_like(a)) == 0.0
    assert Row("x", "y", "ours", 2.0, "ref", 4.0).ratio == 0.5


def test_3d_part(cfg):
    import bench_3d

    rows, res = bench_3d.run(cfg)
    expected = {"Predictor (read+predict+write)", "napari-cxseg predict"}
    if res["bf16_skipped"] is None:  # this CPU computes bfloat16 natively: the third side ran
        expected.add("napari-cxseg predict --precision bfloat16")
        assert res["cli_bf16"]["dice_vs_monai"] is not None
    else:
        assert "bfloat16" in res["note"]
    expected.add("napari-cxseg predict --runtime onnx")  # onnxruntime is a test dependency
    assert res["predictor"]["runtime"] == "torch" and "ran the network in torch" in res["note"]
    assert res["cli_onnx"]["same_grid_as_input"] and res["cli_onnx"]["dice_vs_monai"] is not None
    assert {r.ours for r in rows} == expected
    assert res["predictor"]["same_grid_as_input"] and res["cli"]["same_grid_as_input"]
    assert res["predictor"]["dice_vs_monai"] is not None
    assert all(r.ref_value and r.ref_value > 0 for r in rows)


def test_3d_random_weights_for_a_bundle_without_model(cfg, tmp_path):
    import bench_3d

    src = Path(__file__).parent / "data" / "spleen_ct_segmentation"
    cfg.bundle = src
    bundle, note = bench_3d.prepare_bundle(cfg)
    assert (bundle / "models" / "model.pt").is_file() and not (src / "models" / "model.pt").exists()
    assert "SEEDED-RANDOM" in note


def test_2d_part(cfg):
    import bench_2d

    rows, res = bench_2d.run(cfg)
    assert any("latency" in r.case for r in rows) and any("throughput" in r.case for r in rows)
    assert res["throughput"]["cli"]["images_per_s"] > 0


def test_editing_part(cfg):
    import bench_editing

    rows, raw = bench_editing.run(cfg)
    assert any(r.part == "editing" and "margin" in r.case for r in rows)
    assert any(r.part == "clicks" and r.ours == "backend classical" for r in rows)


@pytest.mark.gui
def test_gui_part(make_napari_viewer):
    import bench_gui

    res = bench_gui.gui_session(tiny=True, viewer=make_napari_viewer())
    rows = bench_gui.rows_for(res)
    assert any("press to labels visible" in r.case for r in rows)
    assert any("blocked" in r.case for r in rows)


def test_growth_part_and_suite_output(cfg, tmp_path):
    import bench_growth
    import run_benchmarks

    rows, res = bench_growth.run(cfg)
    assert Path(res["plot"]).is_file() and res["volumes"] and res["batches"]
    text = run_benchmarks.table(rows)
    assert text.startswith("| part |") and "radiographs" in text
    out = tmp_path / "suite"
    assert run_benchmarks.main(["--tiny", "--parts", "editing", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["rows"] and data["machine"]["nproc"] and not data["errors"]


def _check_runtime_rows(rows):
    assert {r.case for r in rows} == {"tiny 2D UNet network 1x1x32x32 warm latency",
                                      "tiny 3D UNet network 1x1x16x16x16 warm latency"}
    for r in rows:
        assert r.part == "runtimes" and r.reference.startswith("eager") and r.ref_value > 0
        if r.ours_value is None:  # could not run here: the row says why
            assert r.note.startswith("not measured:")
        else:
            assert r.ours_value > 0 and r.agreement is not None and "max|diff|" in r.note
    assert sum("channels-last" in r.ours for r in rows) >= 1 and sum("TorchScript" in r.ours for r in rows) == 2
    return [r for r in rows if r.ours.startswith("ONNX Runtime")]


def test_runtimes_part(cfg):
    import bench_runtimes

    rows, raw = bench_runtimes.run(cfg)
    onnx_rows = _check_runtime_rows(rows)
    assert len(onnx_rows) == 2
    ts = [r for r in rows if "TorchScript" in r.ours]
    assert all(r.ours_value and r.extra["argmax_equal"] > 0.99 for r in ts)
    assert not list((cfg.out / "runtimes").rglob("*.onnx"))  # the exported file is temporary
    assert raw["tiny 2D UNet"]["ms"][bench_runtimes.REFERENCE] > 0


def test_runtimes_part_without_onnxruntime(cfg, monkeypatch):
    import bench_runtimes

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    onnx_rows = _check_runtime_rows(bench_runtimes.run(cfg)[0])
    assert len(onnx_rows) == 2
    assert all(r.ours_value is None and "not importable" in r.note for r in onnx_rows)
