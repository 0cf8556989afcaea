"""Box evaluation (IoU per region) and the ``regions`` / ``boxes`` commands, on files the tests write."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_cxseg.anatomy.boxes import evaluate_boxes, normalise_id, read_boxes, write_box_report
from napari_cxseg.anatomy.imagenome import (
    SceneGraph,
    SceneObject,
    read_scene_graph,
    write_scene_graph,
)
from napari_cxseg.cli import main
from napari_cxseg.images import CxsegError
from napari_cxseg.sample_data_files import sample_paths

GOLD_HEADER = ["image_id", "bbox_name", "x1", "y1", "x2", "y2", "width", "height", "original_x1", "original_y1",
               "original_x2", "original_y2", "original_width", "original_height"]


def _graph(image_id: str, boxes: dict[str, tuple]) -> SceneGraph:
    objs = []
    for name, b in boxes.items():
        o = SceneObject(bbox_name=name, object_id=f"{image_id}_{name}")
        o.set_boxes(b, tuple(v / 10 for v in b))
        objs.append(o)
    return SceneGraph(image_id=image_id, objects=objs)


def _gold_csv(path: Path, rows: list[tuple[str, str, tuple]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(GOLD_HEADER)
        for image_id, name, (x1, y1, x2, y2) in rows:
            w.writerow([image_id, name, x1 / 10, y1 / 10, x2 / 10, y2 / 10, (x2 - x1) / 10, (y2 - y1) / 10,
                        x1, y1, x2, y2, x2 - x1, y2 - y1])
    return path


def test_iou_per_region_against_hand_values(tmp_path):
    pred = {"img1": {"right lung": (0, 0, 10, 10), "left lung": (20, 0, 30, 10), "trachea": (0, 0, 2, 2)},
            "img2": {"right lung": (0, 0, 10, 10)}}
    ref = _gold_csv(tmp_path / "gold.csv", [
        ("img1.dcm", "right lung", (5, 0, 15, 10)),      # IoU 50 / 150
        ("img1.dcm", "left lung", (20, 0, 30, 10)),      # IoU 1
        ("img1.dcm", "carina", (1, 1, 3, 3)),            # missing in prediction
        ("img2.dcm", "right lung", (0, 0, 10, 5)),       # IoU 0.5
    ])
    report = evaluate_boxes(pred, read_boxes(ref))
    by = {(r["image_id"], r["bbox_name"]): r for r in report.rows}
    assert by[("img1", "right lung")]["iou"] == pytest.approx(1 / 3)
    assert by[("img1", "left lung")]["iou"] == 1.0
    assert by[("img1", "carina")]["status"] == "missing in prediction" and by[("img1", "carina")]["iou"] is None
    assert by[("img1", "trachea")]["status"] == "missing in reference"
    assert by[("img2", "right lung")]["iou"] == pytest.approx(0.5)
    summary = {s["bbox_name"]: s for s in report.summary()}
    assert summary["right lung"]["n"] == 2
    assert summary["right lung"]["mean_iou"] == pytest.approx((1 / 3 + 0.5) / 2)
    assert summary["right lung"]["min_iou"] == pytest.approx(1 / 3)
    assert summary["right lung"]["iou_ge_0.5"] == pytest.approx(0.5)
    assert summary["carina"]["missing_pred"] == 1 and summary["trachea"]["missing_ref"] == 1
    assert list(summary)[:2] == ["right lung", "left lung"]  # Chest ImaGenome order
    paths = write_box_report(report, tmp_path / "out")
    assert "right lung" in paths["table"].read_text()
    rows = list(csv.DictReader(open(paths["csv"])))
    assert {r["bbox_name"] for r in rows} == {"right lung", "left lung", "carina", "trachea"}
    assert float(next(r for r in rows if r["image_id"] == "img2")["iou"]) == pytest.approx(0.5)


def test_boxes_from_scene_graphs_and_the_224_space(tmp_path):
    folder = tmp_path / "scene_graph"
    folder.mkdir()
    write_scene_graph(_graph("a1", {"right lung": (0, 0, 100, 100)}), folder / "a1_SceneGraph.json")
    write_scene_graph(_graph("b2", {"right lung": (0, 0, 50, 100)}), folder / "b2_SceneGraph.json")
    table = read_boxes(tmp_path)  # finds the scene_graph/ folder
    assert table == {"a1": {"right lung": (0, 0, 100, 100)}, "b2": {"right lung": (0, 0, 50, 100)}}
    assert read_boxes(folder, space="224")["a1"]["right lung"] == (0, 0, 10, 10)
    assert normalise_id("files/p10/x/abc.dcm") == "abc"


def test_bad_box_inputs_name_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,bbox_name,x1\nimg,right lung,1\n")
    with pytest.raises(CxsegError, match="bad.csv lacks the column"):
        read_boxes(bad)
    with pytest.raises(CxsegError, match="no <dicom_id>_SceneGraph.json"):
        read_boxes(tmp_path)
    with pytest.raises(CxsegError, match="no image is on both sides"):
        evaluate_boxes({"a": {}, "b": {}}, {"c": {}, "d": {}})
    with pytest.raises(CxsegError, match="does not exist"):
        write_box_report(evaluate_boxes({"a": {"x": (0, 0, 1, 1)}}, {"a": {"x": (0, 0, 1, 1)}}), tmp_path / "no" / "r")
    assert not (tmp_path / "no").exists()


def _sample(tmp_path: Path) -> tuple[Path, Path]:
    img, lungs = sample_paths("chest_xray")
    shutil.copy(img, tmp_path / "film.png")
    shutil.copy(lungs, tmp_path / "film_lungs.png")
    return tmp_path / "film.png", tmp_path / "film_lungs.png"


def test_regions_command_with_masks_and_boxes_command(tmp_path, capsys):
    from napari_cxseg.anatomy.regions import mask_box
    from napari_cxseg.io import read

    film, lungs = _sample(tmp_path)
    out = tmp_path / "film_SceneGraph.json"
    assert main(["regions", "-i", str(film), "-o", str(out), "--masks", f"lungs={lungs}"]) == 0
    text = capsys.readouterr().out
    assert "right lung" in text and "left out: needs heart" in text
    sg = read_scene_graph(out)
    lab = np.asarray(read(lungs, as_labels=True)[0].array)
    assert sg.object("right lung").original_box == mask_box(lab == 1).as_tuple()
    assert sg.object("left lung").original_box == mask_box(lab == 2).as_tuple()
    assert sg.object("cardiac silhouette") is None
    # refuses to overwrite without --overwrite, and leaves the file as it was
    before = out.read_bytes()
    assert main(["regions", "-i", str(film), "-o", str(out), "--masks", f"lungs={lungs}"]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    # bad --masks: a message and nothing written
    assert main(["regions", "-i", str(film), "-o", str(tmp_path / "x_SceneGraph.json"), "--masks", "lungs"]) == 1
    assert "KIND=PATH" in capsys.readouterr().err
    assert not (tmp_path / "x_SceneGraph.json").exists()
    # boxes: the computed graph against a reference with one box moved
    ref = read_scene_graph(out)
    x1, y1, x2, y2 = ref.object("right lung").original_box
    half = (x2 - x1) // 2
    ref.object("right lung").set_boxes((x1, y1, x1 + half, y2))
    write_scene_graph(ref, tmp_path / "ref_SceneGraph.json")
    assert main(["boxes", "--pred", str(out), "--ref", str(tmp_path / "ref_SceneGraph.json"),
                 "--out", str(tmp_path / "rep")]) == 0
    table = capsys.readouterr().out
    assert "right lung" in table and f"{half / (x2 - x1):.3f}" in table
    summary = {r["bbox_name"]: r for r in csv.DictReader(open(tmp_path / "rep_summary.csv"))}
    assert float(summary["right lung"]["mean_iou"]) == pytest.approx(half / (x2 - x1))
    assert float(summary["left lung"]["mean_iou"]) == 1.0


def test_regions_command_on_a_folder_with_a_model(tmp_path, capsys):
    film, _ = _sample(tmp_path)
    (tmp_path / "film_lungs.png").unlink()
    out = tmp_path / "graphs"
    assert main(["regions", "-i", str(tmp_path), "-o", str(out), "--model", "cxr-lungs", "--device", "cpu"]) == 0
    sg = read_scene_graph(out / "film_SceneGraph.json")
    assert sg.object("right lung") is not None and sg.object("left lung") is not None
    assert sg.extra["cxseg"]["models"] == ["cxr-lungs"]
    assert main(["regions", "-i", str(tmp_path / "nothing.png"), "-o", str(tmp_path / "n.json")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_regions_command_on_a_mirrored_dicom_film(tmp_path, capsys):
    """A DICOM stored mirrored (PatientOrientation R\\F): the reader flips it for display, the masks
    are drawn on the stored pixels, the scene graph is in the stored (original) pixels, the CTR in mm."""
    from PIL import Image

    from dicom_factory import write_radiograph
    from regions_data import synthetic_structures

    s = {k: v[:, ::-1] for k, v in synthetic_structures().items()}  # as stored: mirrored
    stored = np.where(s["right lung"] | s["left lung"], 800, 3000).astype(np.uint16)
    film = write_radiograph(tmp_path / "film.dcm", stored, patient_orientation="R\\F", spacing=(0.15, 0.14))
    lungs = (s["right lung"] * 1 + s["left lung"] * 2).astype(np.uint8)
    Image.fromarray(lungs).save(tmp_path / "lungs.png")
    Image.fromarray(s["heart"].astype(np.uint8)).save(tmp_path / "heart.png")
    out = tmp_path / "film_SceneGraph.json"
    assert main(["regions", "-i", str(film), "-o", str(out), "--masks", f"lungs={tmp_path / 'lungs.png'}",
                 f"heart={tmp_path / 'heart.png'}"]) == 0
    text = capsys.readouterr().out
    assert "CTR 0.312 (heart 7.0 mm / thorax 22.4 mm)" in text
    sg = read_scene_graph(out)
    assert sg.object("right lung").original_box == (200 - 90, 20, 200 - 20, 180)
    assert sg.object("cardiac silhouette").original_box == (200 - 135, 100, 200 - 85, 160)
    assert sg.viewpoint == "PA" and sg.extra["cxseg"]["cardiothoracic_ratio"]["heart_width_mm"] == pytest.approx(7.0)
