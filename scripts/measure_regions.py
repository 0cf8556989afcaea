"""Measure ``napari-cxseg regions`` on real radiographs against the boxes of their manual masks.

For every validation film of the patient-level split
``split_cases(find_cases(DATA), 0.2, seed=0)`` (films no shipped model was trained on) that has
lung and heart masks (JSRT with SCR masks), the regions are computed twice with the same rules:
from the models' structures (the product) and from the manual masks (the reference). The
script reports the IoU per region, the cardiothoracic ratio of both, and draws the computed boxes
and CTR lines over the first films as PNGs.

Usage::

    python scripts/measure_regions.py ../shared/data/cxr --out /tmp/regions [--model cxr-lungs
        --model cxr-anatomy-demo] [--png 6] [--masks-only]

``--masks-only`` checks the rules on the manual masks alone (CTR, which regions come out) without
running a model. The data folder is read, never copied.
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _run(gen):
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def draw(image, regions, path: Path, title: str = "") -> None:
    """The film with the region boxes (coloured, named) and the CTR lines, as a PNG."""
    from PIL import Image, ImageDraw

    a = np.asarray(image.array, np.float32)
    lo, hi = np.percentile(a, [0.5, 99.5])
    grey = (np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    im = Image.fromarray(grey).convert("RGB")
    d = ImageDraw.Draw(im)
    n = max(len(regions.regions), 1)
    for i, (name, r) in enumerate(regions.regions.items()):
        c = tuple(int(255 * v) for v in colorsys.hsv_to_rgb(i / n, 0.9, 1.0))
        b = r.box
        d.rectangle([b.x1, b.y1, b.x2 - 1, b.y2 - 1], outline=c, width=2)
        d.text((b.x1 + 3, b.y1 + 2), name, fill=c)
    if regions.ctr is not None:
        for line, c in ((regions.ctr.heart_line, (255, 45, 85)), (regions.ctr.thorax_line, (52, 199, 89))):
            (r0, c0), (r1, c1) = line
            d.line([c0, r0, c1, r1], fill=c, width=4)
        d.text((10, 10), f"{title}  CTR {regions.ctr.ratio:.3f}", fill=(255, 255, 0))
    im.save(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="folder with the labelled films (e.g. ../shared/data/cxr)")
    p.add_argument("--out", default="regions-measure", help="output folder (CSVs, PNGs)")
    p.add_argument("--model", action="append", default=None, help="model card(s); default as `regions`")
    p.add_argument("--device", default="auto")
    p.add_argument("--png", type=int, default=6, help="draw this many films")
    p.add_argument("--limit", type=int, default=0, help="at most this many films (0: all)")
    p.add_argument("--masks-only", action="store_true", help="no model: rules on the manual masks only")
    args = p.parse_args(argv)

    from napari_cxseg.anatomy.boxes import BoxReport
    from napari_cxseg.anatomy.region_graph import radiograph_regions
    from napari_cxseg.anatomy.regions import box_iou, compute_regions
    from napari_cxseg.anatomy.structures import default_models, masks_from_files
    from napari_cxseg.io import read
    from napari_cxseg.training import find_cases, split_cases

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _, val = split_cases(find_cases(args.data), 0.2, seed=0)
    films = [c for c in val if "heart" in c.masks and ("lungs" in c.masks or "lung" in c.masks)]
    if args.limit:
        films = films[: args.limit]
    if not films:
        print(f"no validation film with lung and heart masks in {args.data}", file=sys.stderr)
        return 1
    models = [] if args.masks_only else (args.model or default_models())
    print(f"{len(films)} validation films; models: {', '.join(models) or 'none (manual masks only)'}")
    report, ctrs, t0 = BoxReport(), [], time.perf_counter()
    for i, case in enumerate(films):
        image = read(case.image)[0]
        ref = compute_regions(masks_from_files(case.masks, image), image.spatial_shape)
        pred = None
        if models:
            pred = _run(radiograph_regions(image, models, device=args.device)).regions
            for name in dict.fromkeys([*ref.regions, *pred.regions]):
                a, b = pred.regions.get(name), ref.regions.get(name)
                status = "both" if a and b else "missing in prediction" if b else "missing in reference"
                report.rows.append({"image_id": case.case_id, "bbox_name": name, "status": status,
                                    "iou": box_iou(a.box, b.box) if a and b else None,
                                    "pred_box": a.box.as_tuple() if a else None, "ref_box": b.box.as_tuple() if b else None})
        ctrs.append((case.case_id, None if pred is None or pred.ctr is None else pred.ctr.ratio,
                     None if ref.ctr is None else ref.ctr.ratio))
        if i < args.png:
            draw(image, pred or ref, out / f"{case.case_id}_{'model' if pred else 'masks'}.png",
                 f"{case.case_id} ({'models' if pred else 'manual masks'})")
            if pred is not None:
                draw(image, ref, out / f"{case.case_id}_masks.png", f"{case.case_id} (manual masks)")
        print(f"  {case.case_id}: CTR model {ctrs[-1][1] or float('nan'):.3f}  masks {ctrs[-1][2] or float('nan'):.3f}",
              flush=True)
    print(f"done in {time.perf_counter() - t0:.0f} s\n")
    with open(out / "ctr.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["film", "ctr_model", "ctr_masks"])
        w.writerows(ctrs)
    masks_ctr = [c for _, _, c in ctrs if c is not None]
    print(f"CTR from the manual masks: mean {statistics.mean(masks_ctr):.3f}, "
          f"range {min(masks_ctr):.3f}-{max(masks_ctr):.3f} (n={len(masks_ctr)})")
    pairs = [(m, r) for _, m, r in ctrs if m is not None and r is not None]
    if pairs:
        diff = [abs(m - r) for m, r in pairs]
        print(f"CTR model vs masks: mean |difference| {statistics.mean(diff):.3f}, max {max(diff):.3f} "
              f"(n={len(pairs)})")
    if report.rows:
        from napari_cxseg.anatomy.boxes import write_box_report

        write_box_report(report, out / "region_iou")
        print("\nIoU per region, model structures vs manual masks (same rules):")
        print(report.table())
        print("\nshare of films with IoU >= 0.85:")
        for name in ("right lung", "left lung", "cardiac silhouette"):
            ious = [r["iou"] for r in report.rows if r["bbox_name"] == name and r["iou"] is not None]
            if ious:
                print(f"  {name:<20} {sum(v >= 0.85 for v in ious) / len(ious):.2f} ({len(ious)} films), "
                      f"mean {statistics.mean(ious):.3f}, min {min(ious):.3f}")
        print(f"\nwrote {out / 'region_iou.txt'}, {out / 'region_iou.csv'}, {out / 'ctr.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
