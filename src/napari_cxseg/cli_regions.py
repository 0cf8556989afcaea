"""``napari-cxseg regions`` and ``napari-cxseg boxes``: Chest ImaGenome regions from a radiograph
and box IoU against reference boxes (thin faces over :mod:`napari_cxseg.anatomy`).

``regions`` segments the radiograph with the models (default: ``cxr-anatomy`` when its weights
are here, else ``cxr-lungs`` + ``cxr-anatomy-demo``), computes the regions and the
cardiothoracic ratio and writes a ``<dicom_id>_SceneGraph.json`` (Chest ImaGenome schema).
``--masks`` takes structures from mask files instead of models (manual masks). A folder input
writes one scene graph per radiograph into the ``--output`` folder.
``boxes`` compares scene graphs (or a gold-standard CSV) and writes a table and CSVs.
The CXLSeg subcommands live in :mod:`.cli_cxlseg` and are added here too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .images import CxsegError

RADIOGRAPH_EXTS = (".png", ".jpg", ".jpeg", ".dcm")


def add_parsers(sub: Any) -> None:
    """Add ``regions``, ``boxes`` and the CXLSeg subcommands to the main parser."""
    rg = sub.add_parser("regions", help="Chest ImaGenome regions + cardiothoracic ratio of a radiograph -> scene graph",
                        description="Segment a frontal chest radiograph, compute the Chest ImaGenome regions that "
                                    "the structures support (rules: napari_cxseg.anatomy.regions) and the "
                                    "cardiothoracic ratio, and write a <dicom_id>_SceneGraph.json.")
    rg.add_argument("--input", "-i", required=True, help="radiograph (PNG, JPEG, DICOM) or a folder of them")
    rg.add_argument("--output", "-o", required=True,
                    help="scene graph .json (single input) or folder (one <stem>_SceneGraph.json per film)")
    rg.add_argument("--model", "-m", action="append", default=None,
                    help="model card (repeat for several; the first that gives a structure wins); default: "
                         "cxr-anatomy when its weights are here, else cxr-lungs + cxr-anatomy-demo")
    rg.add_argument("--masks", nargs="+", default=None, metavar="KIND=PATH",
                    help="use mask files instead of models: lungs=, lung=, heart=, clavicles= or a structure "
                         "name (single input only)")
    rg.add_argument("--image-id", default=None, help="image_id of the scene graph (default: the file's stem)")
    rg.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cpu, cuda, cuda:N or mps")
    rg.add_argument("--trust", action="store_true", help="allow models whose files hold code")
    rg.add_argument("--overwrite", action="store_true", help="replace existing scene graphs")
    rg.set_defaults(func=cmd_regions)

    bx = sub.add_parser("boxes", help="IoU per region of computed boxes against reference boxes",
                        description="Compare region boxes (scene graphs: a file, a folder or a zip) with reference "
                                    "boxes (scene graphs or a gold_bbox_coordinate_annotations CSV) and write "
                                    "<out>.txt (table), <out>.csv (per image and region) and <out>_summary.csv.")
    bx.add_argument("--pred", required=True, help="computed scene graph(s)")
    bx.add_argument("--ref", required=True, help="reference scene graph(s) or gold-standard box CSV")
    bx.add_argument("--out", default="boxes", help="output prefix (default ./boxes)")
    bx.add_argument("--space", choices=("original", "224"), default="original",
                    help="compare original_x1..y2 (original pixels, default) or x1..y2 (224 space)")
    bx.add_argument("--regions", nargs="+", default=None, help="only these region names")
    bx.set_defaults(func=cmd_boxes)

    from .cli_cxlseg import add_parsers as add_cxlseg

    add_cxlseg(sub)


def _read_radiograph(path: Path) -> Any:
    from .images import Image
    from .io import read

    image = next((o for o in read(path) if isinstance(o, Image)), None)
    if image is None or image.geometry.ndim != 2:
        raise CxsegError(f"{path} is not a 2D radiograph")
    return image


def _parse_masks(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise CxsegError(f"--masks takes KIND=PATH (e.g. lungs=lungs.png), not {item!r}")
        k, v = item.split("=", 1)
        if not Path(v).is_file():
            raise CxsegError(f"mask file {v} does not exist")
        out[k.strip()] = v
    return out


def regions_for_file(path: Path, args: argparse.Namespace, masks: dict[str, str] | None = None) -> Any:
    """Run the regions pipeline on one file; returns the :class:`RegionResult`."""
    from .anatomy.region_graph import (
        RegionResult,
        pixel_spacing_mm,
        radiograph_regions,
        regions_scene_graph,
    )
    from .anatomy.regions import compute_regions
    from .anatomy.structures import masks_from_files

    image = _read_radiograph(path)
    if masks:
        structures = masks_from_files(masks, image)
        rs = compute_regions(structures, image.spatial_shape)
        if rs.ctr is not None:
            rs.ctr.column_spacing_mm = pixel_spacing_mm(image)
        names = [f"mask:{k}" for k in masks]
        return RegionResult(rs, regions_scene_graph(rs, image, args.image_id, names), [], names)
    gen = radiograph_regions(image, args.model, device=args.device, trust=args.trust, image_id=args.image_id)
    while True:
        try:
            step, total, what = next(gen)
        except StopIteration as stop:
            return stop.value
        print(f"  [{step + 1}/{total}] {what}", file=sys.stderr)


def print_regions(result: Any, target: Path) -> None:
    """Print the regions, what was left out and the CTR."""
    rs = result.regions
    print(f"{target}: {len(rs.regions)} regions (models: {', '.join(result.models)})")
    for name, r in rs.regions.items():
        b = r.box
        print(f"  {name:<28} x {b.x1:7.1f}-{b.x2:7.1f}  y {b.y1:7.1f}-{b.y2:7.1f}   {r.rule}")
    for name, why in rs.left_out.items():
        print(f"  {name:<28} left out: {why}")
    if rs.ctr is not None:
        print(f"  cardiothoracic ratio: {rs.ctr.describe()}")
    else:
        print("  cardiothoracic ratio: not computed (needs the heart and both lungs)")


def cmd_regions(args: argparse.Namespace) -> int:
    """``napari-cxseg regions``."""
    from .anatomy.imagenome import SCENE_GRAPH_SUFFIX, write_scene_graph

    src, out = Path(args.input), Path(args.output)
    if not src.exists():
        raise CxsegError(f"input {src} does not exist")
    masks = _parse_masks(args.masks) if args.masks else None
    if src.is_dir():
        if masks:
            raise CxsegError("--masks works on one radiograph, not a folder")
        files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in RADIOGRAPH_EXTS)
        if not files:
            raise CxsegError(f"{src} holds no radiographs ({', '.join(RADIOGRAPH_EXTS)})")
        out.mkdir(parents=True, exist_ok=True)
        failed = 0
        for f in files:
            target = out / f"{f.name.split('.')[0]}{SCENE_GRAPH_SUFFIX}"
            if target.exists() and not args.overwrite:
                print(f"{target} exists: skipped (--overwrite replaces it)")
                continue
            try:
                result = regions_for_file(f, args)
                write_scene_graph(result.scene_graph, target)
                print_regions(result, target)
            except CxsegError as e:
                failed += 1
                print(f"{f}: failed: {e}", file=sys.stderr)
        return 1 if failed else 0
    if out.suffix.lower() != ".json":
        raise CxsegError(f"--output {out} must be a .json file (<dicom_id>{SCENE_GRAPH_SUFFIX})")
    if out.exists() and not args.overwrite:
        raise CxsegError(f"{out} exists; pass --overwrite to replace it")
    result = regions_for_file(src, args, masks)
    write_scene_graph(result.scene_graph, out)
    print_regions(result, out)
    return 0


def cmd_boxes(args: argparse.Namespace) -> int:
    """``napari-cxseg boxes``."""
    from .anatomy.boxes import evaluate_boxes, read_boxes, write_box_report

    pred = read_boxes(args.pred, args.space)
    ref = read_boxes(args.ref, args.space)
    report = evaluate_boxes(pred, ref, args.regions)
    paths = write_box_report(report, args.out)
    print(report.table())
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    return 0
