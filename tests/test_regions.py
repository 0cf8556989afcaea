"""Chest ImaGenome region rules and the cardiothoracic ratio on radiographs with known masks.

Hand-computed boxes on rectangles; a radiograph rendered from the real public chest CT with its
projected TotalSegmentator structures; a mirrored film (sides by anatomy, not by position); the
scene graph in stored pixels of a flipped film; real paediatric films (tests/data/kermany_cxr,
no masks) for sanity with the shipped lung model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_cxseg.anatomy.ctr import cardiothoracic_ratio
from napari_cxseg.anatomy.regions import Box, box_iou, compute_regions, mask_box
from regions_data import ct_radiograph_structures, synthetic_structures

KERMANY = Path(__file__).parent / "data" / "kermany_cxr"


def _close(box: Box, expected: tuple, tol: float = 1e-6) -> bool:
    return np.allclose(box.as_tuple(), expected, atol=tol)


def test_box_iou_hand_values():
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert box_iou((0, 0, 4, 4), (1, 1, 3, 3)) == pytest.approx(4 / 16)


def test_rules_on_hand_computed_rectangles():
    rs = compute_regions(synthetic_structures())
    b = rs.boxes()
    assert _close(b["right lung"], (20, 20, 90, 180))
    assert _close(b["left lung"], (110, 30, 180, 170))
    # thirds of the right lung's 160 rows: 20 | 73.3 | 126.7 | 180 (rows rounded)
    assert _close(b["right upper lung zone"], (20, 20, 90, 73))
    assert _close(b["right mid lung zone"], (20, 73, 90, 127))
    assert _close(b["right lower lung zone"], (20, 127, 90, 180))
    assert _close(b["right apical zone"], (20, 20, 90, 40))  # lung above the clavicle's lower border (row 39)
    assert _close(b["right costophrenic angle"], (20, 162.5, 37.5, 180))  # side W/4 = 17.5 at the lateral tip
    assert _close(b["left costophrenic angle"], (162.5, 152.5, 180, 170))
    assert _close(b["right hilar structures"], (90 - 70 / 3, 73, 90, 127))
    assert _close(b["cardiac silhouette"], (85, 100, 135, 160))
    assert rs.midline == pytest.approx(100.0)
    assert _close(b["upper mediastinum"], (90, 20, 110, 100))
    assert _close(b["mediastinum"], (85, 20, 135, 160))
    # lowest lung/heart pixel per column on each side of the midline, + H/50 below
    assert _close(b["right hemidiaphragm"], (20, 159, 100, 180 + 160 / 50))
    assert _close(b["left hemidiaphragm"], (100, 159, 180, 170 + 140 / 50))
    assert _close(b["abdomen"], (20, 159, 180, 200))
    assert _close(b["right clavicle"], (10, 30, 80, 40))
    for name in ("trachea", "spine", "aortic arch", "svc", "carina", "right atrium", "cavoatrial junction"):
        assert name in rs.left_out and name not in b
    # CTR: heart 50 px (columns 85-134) over thorax 160 px (columns 20-179)
    assert rs.ctr is not None
    assert rs.ctr.ratio == pytest.approx(50 / 160)
    assert rs.ctr.heart_line == ((130.0, 85.0), (130.0, 135.0))
    assert rs.ctr.thorax_line[0][1] == 20.0 and rs.ctr.thorax_line[1][1] == 180.0


def test_regions_left_out_without_their_structures():
    s = synthetic_structures()
    lungs_only = {k: s[k] for k in ("right lung", "left lung")}
    lungs_only["right lung"] = lungs_only["right lung"].copy()
    lungs_only["right lung"][20:60, 90:96] = True  # the upper lung reaching further medially
    rs = compute_regions(lungs_only)
    assert "right hemidiaphragm" in rs.regions  # the right side needs no heart
    # the medial columns end at the upper lung's mediastinal border, not at the diaphragm
    assert rs.regions["right hemidiaphragm"].box.as_tuple() == (20, 179, 90, 180 + 160 / 50)
    assert rs.left_out["left hemidiaphragm"] == "needs heart"
    assert rs.left_out["cardiac silhouette"] == "needs heart"
    assert rs.left_out["right apical zone"] == "needs right clavicle"
    assert "abdomen" in rs.left_out and "mediastinum" in rs.left_out
    assert rs.ctr is None


def test_mirrored_film_keeps_the_sides_by_anatomy():
    s = synthetic_structures()
    rs = compute_regions(s)
    mirrored = compute_regions({k: v[:, ::-1] for k, v in s.items()})
    assert set(mirrored.regions) == set(rs.regions)
    for name, region in rs.regions.items():
        b = region.box
        m = mirrored.regions[name].box
        assert np.allclose((200 - b.x2, b.y1, 200 - b.x1, b.y2), m.as_tuple()), name
    assert mirrored.ctr.ratio == pytest.approx(rs.ctr.ratio)


def test_lung_under_a_clavicle_class_is_given_back():
    from napari_cxseg.anatomy.structures import masks_from_label_map
    from napari_cxseg.geometry import radiograph_geometry
    from napari_cxseg.images import LabelClass, LabelMap

    s = synthetic_structures()
    arr = np.zeros((200, 200), np.uint8)
    arr[s["right lung"]] = 1
    arr[s["left lung"]] = 2
    arr[s["right clavicle"]] = 3  # painted over the lung, as a one-class-per-pixel map does
    lm = LabelMap(arr, radiograph_geometry((200, 200)), {1: LabelClass("Right Lung"), 2: LabelClass("Left Lung"),
                                                         3: LabelClass("Right Clavicle")})
    got = masks_from_label_map(lm)
    assert np.array_equal(got["right lung"], s["right lung"])
    assert set(got) == {"right lung", "left lung", "right clavicle"}


@pytest.fixture(scope="module")
def ct_film(public_data):
    return ct_radiograph_structures()


def test_rules_on_a_radiograph_rendered_from_a_real_ct(ct_film):
    image, s = ct_film
    rs = compute_regions(s)
    b = rs.boxes()
    for name, struct in (("right lung", "right lung"), ("left lung", "left lung"), ("cardiac silhouette", "heart"),
                         ("trachea", "trachea"), ("spine", "spine"), ("right clavicle", "right clavicle")):
        assert b[name] == mask_box(s[struct]), name
    # PA film: the patient's right lung on the image's left
    assert b["right lung"].x1 + b["right lung"].x2 < b["left lung"].x1 + b["left lung"].x2
    for side in ("right", "left"):
        lung = b[f"{side} lung"]
        up, mid, low = (b[f"{side} {z} lung zone"] for z in ("upper", "mid", "lower"))
        assert up.y1 == lung.y1 and low.y2 == lung.y2
        assert abs(up.y2 - mid.y1) <= 1 and abs(mid.y2 - low.y1) <= 1
        for z in (up, mid, low, b[f"{side} hilar structures"], b[f"{side} costophrenic angle"]):
            assert lung.x1 - 1e-6 <= z.x1 and z.x2 <= lung.x2 + 1e-6 and lung.y1 <= z.y1 and z.y2 <= lung.y2 + 1e-6
        assert b[f"{side} apical zone"].y2 <= up.y2
        assert b[f"{side} hemidiaphragm"].y1 > mid.y1  # the dome lies below the mid zone's top
    heart, med, upper = b["cardiac silhouette"], b["mediastinum"], b["upper mediastinum"]
    assert med == upper.union(heart)
    assert upper.y2 == heart.y1
    trachea_x = (b["trachea"].x1 + b["trachea"].x2) / 2
    assert upper.x1 < trachea_x < upper.x2
    assert b["aortic arch"].y2 <= heart.y1 and b["aortic arch"].area > 0
    assert rs.midline is not None and b["right lung"].x2 < rs.midline + 20 < b["left lung"].x2 + 20
    assert 0.35 < rs.ctr.ratio < 0.65
    assert rs.ctr.ratio == pytest.approx(cardiothoracic_ratio(s["heart"], s["right lung"], s["left lung"]).ratio)
    hx = [p[1] for p in rs.ctr.heart_line]
    assert hx == [heart.x1, heart.x2]  # the heart line spans the silhouette's width


def test_scene_graph_of_a_flipped_film_is_in_stored_pixels(tmp_path):
    """A film stored mirrored (the reader flips it for display): boxes go back to the stored pixels."""
    from napari_cxseg.anatomy.imagenome import read_scene_graph, write_scene_graph
    from napari_cxseg.anatomy.region_graph import regions_layer_data, regions_scene_graph
    from napari_cxseg.geometry import radiograph_geometry
    from napari_cxseg.images import Image

    s = synthetic_structures()
    geom = radiograph_geometry((200, 200), spacing=(0.5, 0.5), ornt=np.array([[0, 1], [1, -1]]))
    image = Image(np.zeros((200, 200), np.float32), geom, "DX", meta={"source_path": str(tmp_path / "abc123.png")})
    rs = compute_regions(s)
    sg = regions_scene_graph(rs, image, models=["test"])
    assert sg.image_id == "abc123" and sg.image_size == (200, 200)
    lung = sg.object("right lung")
    assert lung.original_box == (200 - 90, 20, 200 - 20, 180)  # columns mirrored back
    path = tmp_path / "abc123_SceneGraph.json"
    write_scene_graph(sg, path)
    back = read_scene_graph(path)
    assert [o.bbox_name for o in back.objects] == list(rs.regions)
    assert back.object("right lung").original_box == lung.original_box
    assert back.extra["cxseg"]["left_out"]["svc"]
    assert back.extra["cxseg"]["cardiothoracic_ratio"]["ratio"] == pytest.approx(50 / 160)
    # on the displayed film the box sits on the held pixels (world = held index * 0.5 mm)
    data, kw, kind = regions_layer_data(sg, image)
    i = kw["features"]["bbox_name"].index("right lung")
    corners = np.asarray(data[i])
    assert kind == "shapes"
    assert np.allclose(corners.min(axis=0), np.array([20 - 0.5, 20 - 0.5]) * 0.5)
    assert np.allclose(corners.max(axis=0), np.array([180 - 0.5, 90 - 0.5]) * 0.5)


def test_ctr_layer_lines_in_world_coordinates():
    from napari_cxseg.anatomy.region_graph import ctr_layer_data
    from napari_cxseg.geometry import radiograph_geometry

    rs = compute_regions(synthetic_structures())
    lines, kw, kind = ctr_layer_data(rs, radiograph_geometry((200, 200), spacing=(2.0, 2.0)))
    assert kind == "shapes" and kw["shape_type"] == "line"
    assert np.allclose(lines[0], [[(130 - 0.5) * 2, (85 - 0.5) * 2], [(130 - 0.5) * 2, (135 - 0.5) * 2]])
    assert kw["features"]["line"] == ["heart width", "thoracic width"]


@pytest.mark.parametrize("name", sorted(p.name for p in KERMANY.glob("*.png")))
def test_real_films_sanity_with_the_shipped_models(name):
    """Real paediatric AP films without masks: the regions the shipped models support are sane."""
    from napari_cxseg.anatomy.region_graph import radiograph_regions
    from napari_cxseg.anatomy.structures import default_models
    from napari_cxseg.io import read

    image = read(KERMANY / name)[0]
    gen = radiograph_regions(image, default_models(), device="cpu")
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        result = stop.value
    b = result.regions.boxes()
    rows, cols = image.spatial_shape
    assert b["right lung"].x2 < b["left lung"].x2 and b["right lung"].x1 < b["left lung"].x1
    for side in ("right", "left"):
        assert b[f"{side} upper lung zone"].y1 < b[f"{side} lower lung zone"].y1
        lung = b[f"{side} lung"]
        assert 0.15 * cols < lung.width < 0.6 * cols and 0.3 * rows < lung.height <= rows
        assert lung.x1 >= 0 and lung.x2 <= cols and lung.y1 >= 0 and lung.y2 <= rows
    if "heart" in {s for r in result.regions.regions.values() for s in r.structures}:
        assert 0.3 < result.regions.ctr.ratio < 0.75
    else:
        assert "cardiac silhouette" in result.regions.left_out


def test_torchxrayvision_classes_give_the_central_regions():
    """A label map with cxr-anatomy's (TorchXRayVision PSPNet) class names, smallest structure on top."""
    from napari_cxseg.anatomy.structures import masks_from_label_map
    from napari_cxseg.geometry import radiograph_geometry
    from napari_cxseg.images import LabelMap
    from napari_cxseg.models.cards import find_card
    from regions_data import rect

    card = find_card("cxr-anatomy")
    ids = {c.name: k for k, c in card.classes.items()}
    s = synthetic_structures()
    shape = (200, 200)
    layers = [  # painted largest first, as the card's 'smallest' overlap rule does
        ("Mediastinum", rect(shape, 10, 160, 88, 112) | s["heart"]), ("Right Lung", s["right lung"]),
        ("Left Lung", s["left lung"]), ("Heart", s["heart"]), ("Spine", rect(shape, 0, 200, 94, 106)),
        ("Aorta", rect(shape, 60, 100, 100, 115)), ("Weasand", rect(shape, 10, 90, 97, 103)),
        ("Right Hilus Pulmonis", rect(shape, 70, 100, 70, 90)), ("Left Hilus Pulmonis", rect(shape, 70, 100, 110, 128)),
        ("Right Clavicle", s["right clavicle"]), ("Left Clavicle", s["left clavicle"]),
    ]
    arr = np.zeros(shape, np.uint8)
    for name, m in layers:
        arr[m] = ids[name]
    got = masks_from_label_map(LabelMap(arr, radiograph_geometry(shape), dict(card.classes)))
    assert np.array_equal(got["right lung"], s["right lung"])  # given back under the hilum and the clavicle
    rs = compute_regions(got)
    b = rs.boxes()
    assert b["trachea"] == Box(97, 10, 103, 90)
    assert b["spine"] == Box(94, 0, 106, 200)
    assert b["right hilar structures"] == Box(70, 70, 90, 100) and rs.regions["right hilar structures"].rule == "hilum mask"
    assert b["aortic arch"] == Box(100, 60, 115, 100)  # the aorta above the heart's top (row 100)
    assert b["upper mediastinum"].y2 == 100 and b["upper mediastinum"].x1 <= 97 and b["upper mediastinum"].x2 >= 115
    assert rs.midline == pytest.approx(100.0, abs=1.0)  # the spine's median column (trachea, aorta painted over it)
