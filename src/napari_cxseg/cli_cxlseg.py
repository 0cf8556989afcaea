"""``napari-cxseg cxlseg-export``: the product's lung predictions as a CXLSeg-style dataset
(a thin face over :func:`napari_cxseg.cxlseg_export.export_predictions`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parsers(sub: Any) -> None:
    """Add the ``cxlseg-export`` subcommand."""
    ex = sub.add_parser("cxlseg-export", help="predict lungs and write a CXLSeg-style dataset (masks, segmented "
                                              "images, CSVs)",
                        description="Segment the lungs of radiographs (a file, a folder searched recursively, e.g. "
                                    "a MIMIC-CXR-JPG tree, or a CSV with a 'path' column) and write <dicom_id>-mask.jpg, "
                                    "<dicom_id>.jpg (segmented image) and the CXLSeg CSVs into --output. Masks "
                                    "already there are kept unless --overwrite.")
    ex.add_argument("--input", "-i", required=True, help="radiograph, folder or CSV")
    ex.add_argument("--output", "-o", required=True, help="dataset folder to write")
    ex.add_argument("--model", "-m", default="cxr-lungs", help="lung model card (default cxr-lungs)")
    ex.add_argument("--mask-size", type=int, default=224,
                    help="side of the square masks and segmented images (224 as CXLSeg; 0: the radiograph's size)")
    ex.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cpu, cuda, cuda:N or mps")
    ex.add_argument("--seed", type=int, default=0, help="seed of the patient-level split")
    ex.add_argument("--overwrite", action="store_true", help="predict again where a mask exists")
    ex.set_defaults(func=cmd_cxlseg_export)


def cmd_cxlseg_export(args: argparse.Namespace) -> int:
    """``napari-cxseg cxlseg-export``."""
    from .cxlseg_export import export_predictions

    gen = export_predictions(args.input, args.output, model=args.model, device=args.device,
                             mask_size=args.mask_size, overwrite=args.overwrite, seed=args.seed)
    while True:
        try:
            done, total, what = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        if what != "CSVs":
            print(f"  [{done + 1}/{total}] {what}", file=sys.stderr)
    for did, why in result.failed.items():
        print(f"{did}: failed: {why}", file=sys.stderr)
    print(f"{result.out}: {len(result.written)} written, {len(result.skipped)} kept, {len(result.failed)} failed")
    return 1 if result.failed else 0
