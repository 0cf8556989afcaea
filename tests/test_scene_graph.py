"""Chest ImaGenome scene graphs: round trips, layouts, box placement, comparison relations."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from napari_cxseg._reader import get_reader
from napari_cxseg._writer import write_scene_graph_layer
from napari_cxseg.anatomy import REGION_NAMES, read_scene_graph, write_scene_graph
from napari_cxseg.anatomy.imagenome import SceneGraphError
from napari_cxseg.anatomy.scene_graph_files import list_scene_graphs
from napari_cxseg.anatomy.scene_graph_layer import scene_graph_from_layer
from napari_cxseg.anatomy.scene_graph_space import Space224, fit_space_224
from napari_cxseg.images import CxsegError
from scene_graph_factory import (
    lung_image,
    pixel_boxes,
    scene_graph_dict,
    write_scene_graph_json,
)

ROWS, COLS = 3056, 2544  # a MIMIC-CXR PA film


def _film(rows: int, cols: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(20, 235, (rows, cols)).astype(np.uint8)


def _open(path: Path) -> list:
    reader = get_reader(str(path))
    assert reader is not None, path
    return reader(str(path))


def _shapes(layers: list) -> tuple:
    return next(layer for layer in layers if layer[2] == "shapes")


def _world_boxes(layer: tuple) -> dict[str, np.ndarray]:
    data, kw, _ = layer
    names = kw["features"]["bbox_name"]
    return {n: np.array([*v.min(axis=0), *v.max(axis=0)]) for n, v in zip(names, data, strict=True)}


# ----------------------------------------------------------------------------- model + JSON


def test_round_trip_keeps_schema_untouched_fields_and_order(tmp_path):
    src = scene_graph_dict("cur1", pixel_boxes(ROWS, COLS), (ROWS, COLS), prior_id="pri1")
    path = write_scene_graph_json(tmp_path, src)
    sg = read_scene_graph(path)
    assert [o.bbox_name for o in sg.objects] == list(REGION_NAMES)
    assert sg.image_id == "cur1" and sg.patient == 10000032 and sg.study == 50414267
    assert sg.extra["custom_field"] == {"kept": [1, 2, 3]}
    out = tmp_path / "out" / "cur1_SceneGraph.json"
    out.parent.mkdir()
    write_scene_graph(sg, out)
    back = json.loads(out.read_text())
    assert back == src
    assert list(back) == list(src)
    assert all(list(a) == list(b) for a, b in zip(back["objects"], src["objects"], strict=True))
    assert all(list(a) == list(b) for a, b in zip(back["attributes"], src["attributes"], strict=True))
    assert read_scene_graph(out) == read_scene_graph(out)


def test_findings_model(tmp_path):
    sg = read_scene_graph(write_scene_graph_json(tmp_path, scene_graph_dict(
        "c", pixel_boxes(ROWS, COLS), (ROWS, COLS), prior_id="p")))  # fmt: skip
    f = sg.findings("right lower lung zone")
    assert f.abnormal and sg.is_abnormal("cardiac silhouette")
    assert not sg.is_abnormal("left lung") and sg.findings("left lung") is not None
    assert [str(a) for a in f.attributes[0]][0] == "anatomicalfinding|yes|lung opacity"
    assert f.cues("severity", 0) == ["mild"] and f.cues("comparison", 0) == ["worsened"]
    assert sg.findings("cardiac silhouette").cues("temporal", 0) == ["chronic"]
    assert f.attributes[0][0].concept_id == "CL00"


def test_comparison_relations_on_two_exams(tmp_path):
    boxes = pixel_boxes(ROWS, COLS)
    prior = read_scene_graph(write_scene_graph_json(tmp_path, scene_graph_dict("p1", boxes, (ROWS, COLS))))
    cur = read_scene_graph(write_scene_graph_json(
        tmp_path, scene_graph_dict("c1", boxes, (ROWS, COLS), prior_id="p1")))  # fmt: skip
    assert prior.relationships == []
    assert cur.comparisons("right lower lung zone") == ["worsened"]
    assert cur.comparisons("right costophrenic angle") == ["improved"]
    assert cur.comparisons("cardiac silhouette") == ["no change"]
    assert cur.comparisons("left lung") == []
    assert {r.previous_image_id for r in cur.relationships} == {prior.image_id}
    assert {r.current_image_id for r in cur.relationships} == {cur.image_id}


def test_bad_files_name_the_file(tmp_path):
    bad = tmp_path / "x_SceneGraph.json"
    bad.write_text("{not json")
    with pytest.raises(SceneGraphError, match="x_SceneGraph.json is not valid JSON"):
        read_scene_graph(bad)
    bad.write_text(json.dumps({"image_id": "x", "objects": [{"x1": 1}]}))
    with pytest.raises(SceneGraphError, match="x_SceneGraph.json: object 0 has no 'bbox_name'"):
        read_scene_graph(bad)
    bad.write_text(json.dumps({"image_id": "x", "objects": [{"bbox_name": "spine", "x1": "a"}]}))
    with pytest.raises(SceneGraphError, match="non-numeric 'x1'"):
        read_scene_graph(bad)
    with pytest.raises(CxsegError, match="x_SceneGraph.json"):
        _open(bad)
    sg = read_scene_graph(write_scene_graph_json(tmp_path, scene_graph_dict("ok", {}, (10, 10))))
    with pytest.raises(SceneGraphError, match="into archives"):
        write_scene_graph(sg, tmp_path / "a.zip")


# ----------------------------------------------------------------------------- layouts


def test_zip_and_nested_folder_layouts(tmp_path):
    data = [scene_graph_dict(f"id{i}", pixel_boxes(ROWS, COLS), (ROWS, COLS)) for i in range(3)]
    archive = tmp_path / "scene_graph.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for d in data:
            zf.writestr(f"scene_graph/{d['image_id']}_SceneGraph.json", json.dumps(d))
    nested = tmp_path / "silver_dataset" / "scene_graph" / "scene_graph"
    nested.mkdir(parents=True)
    for d in data:
        write_scene_graph_json(nested, d)
    assert len(list_scene_graphs(archive)) == 3
    assert len(list_scene_graphs(tmp_path / "silver_dataset")) == 3
    member = f"{archive}/scene_graph/id1_SceneGraph.json"
    assert read_scene_graph(member).image_id == "id1"
    assert read_scene_graph(zipfile.Path(archive, "scene_graph/id2_SceneGraph.json")).image_id == "id2"
    for path in (archive, tmp_path / "silver_dataset", Path(member)):
        layers = _open(path)
        assert all(t == "shapes" for _, _, t in layers)
        assert {len(d) for d, _, _ in layers} == {29}
    with pytest.raises(SceneGraphError, match="holds 3 scene graphs"):
        read_scene_graph(archive)


def test_too_many_graphs_refused_with_a_hint(tmp_path, monkeypatch):
    import napari_cxseg.anatomy.scene_graph_open as so

    monkeypatch.setattr(so, "MAX_OPEN", 2)
    for i in range(3):
        write_scene_graph_json(tmp_path, scene_graph_dict(f"g{i}", {}, (10, 10)))
    with pytest.raises(CxsegError, match="holds 3 scene graphs; open one of them"):
        _open(tmp_path)


# ----------------------------------------------------------------------------- placement


def test_boxes_without_radiograph_in_original_pixels(tmp_path):
    boxes = pixel_boxes(ROWS, COLS)
    layer = _shapes(_open(write_scene_graph_json(tmp_path, scene_graph_dict("solo", boxes, (ROWS, COLS)))))
    placed = _world_boxes(layer)
    for name, (x1, y1, x2, y2) in boxes.items():
        np.testing.assert_allclose(placed[name], [y1 - 0.5, x1 - 0.5, y2 - 0.5, x2 - 0.5])
    assert layer[1]["text"]["string"] == "{label}"
    assert list(layer[1]["features"]["bbox_name"]) == list(REGION_NAMES)


@pytest.mark.parametrize("shown", [(ROWS, COLS), (764, 636), (224, 224), (1000, 1200)])
def test_boxes_on_rescaled_and_non_square_images(tmp_path, shown):
    """The same anatomy at any resolution: the box in shown pixels is the original scaled."""
    boxes = pixel_boxes(ROWS, COLS)
    write_scene_graph_json(tmp_path, scene_graph_dict("r1", boxes, (ROWS, COLS)))
    PILImage.fromarray(_film(*shown)).save(tmp_path / "r1.png")
    layers = _open(tmp_path / "r1_SceneGraph.json")
    assert [t for _, _, t in layers] == ["image", "shapes"]
    placed = _world_boxes(_shapes(layers))
    sr, sc = shown[0] / ROWS, shown[1] / COLS
    for name, (x1, y1, x2, y2) in boxes.items():
        expect = [y1 * sr - 0.5, x1 * sc - 0.5, y2 * sr - 0.5, x2 * sc - 0.5]
        np.testing.assert_allclose(placed[name], expect, atol=max(1.0, 0.003 * max(shown)))


def test_boxes_on_dicom_in_mm_and_on_a_mirrored_film(tmp_path):
    """PixelSpacing world frame; a film stored mirrored (R\\F) is flipped: boxes follow."""
    from dicom_factory import write_radiograph

    rows, cols, spacing = 600, 500, (0.15, 0.14)
    for orient, mirrored in (("L\\F", False), ("R\\F", True)):
        folder = tmp_path / orient.replace("\\", "")
        boxes = pixel_boxes(rows, cols, mirrored=mirrored)
        folder.mkdir()
        write_scene_graph_json(folder, scene_graph_dict("dx1", boxes, (rows, cols)))
        write_radiograph(folder / "dx1.dcm", lung_image(rows, cols, mirrored), spacing=spacing,
                         patient_orientation=orient)  # fmt: skip
        layers = _open(folder / "dx1_SceneGraph.json")
        image = next(x for x in layers if x[2] == "image")
        assert image[1]["scale"] == pytest.approx(spacing)
        placed = _world_boxes(_shapes(layers))
        r0, c0, r1, c1 = placed["right lung"]
        # the box covers the bright right lung in the displayed (held) image ...
        held = image[0]
        rr = slice(round(r0 / spacing[0] + 0.5), round(r1 / spacing[0] + 0.5))
        cc = slice(round(c0 / spacing[1] + 0.5), round(c1 / spacing[1] + 0.5))
        assert held[rr, cc].mean() > 0.95 * held.max()
        # ... which is on the screen's left (patient's right), whatever the stored order
        assert c1 < cols * spacing[1] / 2
        assert placed["left lung"][1] > cols * spacing[1] / 2


def test_space_224_fit_recovers_the_original_size():
    boxes = pixel_boxes(ROWS, COLS)
    from napari_cxseg.anatomy.imagenome import SceneGraph

    sg = SceneGraph.from_dict(scene_graph_dict("f", boxes, (ROWS, COLS)))
    fit = fit_space_224(sg)
    assert fit is not None and fit.residual < 0.5
    assert fit.original_size == pytest.approx((ROWS, COLS), rel=0.005)
    lb = Space224.letterbox(ROWS, COLS)
    assert lb.original_size == pytest.approx((ROWS, COLS))


# ----------------------------------------------------------------------------- writer


def test_save_and_reopen_gives_the_same_boxes(tmp_path):
    boxes = pixel_boxes(ROWS, COLS)
    src = scene_graph_dict("s1", boxes, (ROWS, COLS), prior_id="s0")
    write_scene_graph_json(tmp_path, src)
    PILImage.fromarray(_film(764, 636)).save(tmp_path / "s1.png")
    data, kw, _ = _shapes(_open(tmp_path / "s1_SceneGraph.json"))
    out = tmp_path / "saved" / "s1_SceneGraph.json"
    out.parent.mkdir()
    assert write_scene_graph_layer(str(out), data, kw) == [str(out)]
    assert json.loads(out.read_text()) == src  # nothing edited: the same file content
    # move one box by 10 shown pixels (40 original pixels) and save again
    moved = [np.array(v) for v in data]
    i = list(kw["features"]["bbox_name"]).index("cardiac silhouette")
    moved[i] = moved[i] + [10.0, 0.0]
    write_scene_graph_layer(str(out), moved, kw)
    again = read_scene_graph(out)
    obj = again.object("cardiac silhouette")
    x1, y1, x2, y2 = boxes["cardiac silhouette"]
    assert obj.original_box == pytest.approx((x1, y1 + 40, x2, y2 + 40), abs=1.0)
    lb = Space224.letterbox(ROWS, COLS)
    assert obj.box_224 == pytest.approx(lb.to_224(obj.original_box), abs=1.0)
    assert obj.extra["synsets"] == ["C0024109"]
    # reopened over the same film, every box is where it was saved, within a pixel
    (tmp_path / "saved" / "s1.png").write_bytes((tmp_path / "s1.png").read_bytes())
    placed = _world_boxes(_shapes(_open(out)))
    for name, v in zip(kw["features"]["bbox_name"], moved, strict=True):
        np.testing.assert_allclose(placed[name], [*v.min(axis=0), *v.max(axis=0)], atol=1.0)


def test_writer_refuses_unnamed_and_duplicate_boxes(tmp_path):
    data, kw, _ = _shapes(_open(write_scene_graph_json(
        tmp_path, scene_graph_dict("w1", pixel_boxes(ROWS, COLS), (ROWS, COLS)))))  # fmt: skip
    out = tmp_path / "w1_out_SceneGraph.json"
    feats = {k: list(v) for k, v in kw["features"].items()}
    feats["bbox_name"][3] = ""
    with pytest.raises(CxsegError, match="shape 3 has no bbox_name"):
        write_scene_graph_layer(str(out), data, {**kw, "features": feats})
    feats["bbox_name"][3] = "spine"
    with pytest.raises(CxsegError, match="more than one box named spine"):
        write_scene_graph_layer(str(out), data, {**kw, "features": feats})
    assert not out.exists()


def test_new_graph_from_plain_boxes(tmp_path):
    """A Shapes layer without a scene graph saves as one when named <dicom_id>_SceneGraph.json."""
    rect = np.array([[10.0, 20.0], [10.0, 60.0], [90.0, 60.0], [90.0, 20.0]])
    meta = {"features": {"bbox_name": ["right lung"]}, "metadata": {}}
    with pytest.raises(CxsegError, match="has no scene graph"):
        scene_graph_from_layer([rect], meta, str(tmp_path / "boxes.json"))
    out = tmp_path / "new1_SceneGraph.json"
    write_scene_graph_layer(str(out), [rect], meta)
    sg = read_scene_graph(out)
    assert sg.image_id == "new1"
    # edges at index - 0.5, written as whole pixels (the dataset convention): within half a pixel
    assert sg.object("right lung").original_box == pytest.approx((20.5, 10.5, 60.5, 90.5), abs=0.5)


def test_writer_applies_the_layers_own_transform(tmp_path):
    """Boxes of a Shapes layer someone scaled/translated are saved where they are shown."""
    rect = np.array([[10.0, 20.0], [10.0, 60.0], [90.0, 60.0], [90.0, 20.0]])
    meta = {"features": {"bbox_name": ["spine"]}, "metadata": {}, "scale": (2.0, 2.0),
            "translate": (5.0, 0.0)}  # fmt: skip
    out = tmp_path / "t1_SceneGraph.json"
    write_scene_graph_layer(str(out), [rect], meta)
    box = read_scene_graph(out).object("spine").original_box
    assert box == pytest.approx((40.5, 25.5, 120.5, 185.5), abs=0.5)
