"""Where the bundled sample files are (no napari import; used by the demo and the CLI)."""

from __future__ import annotations

from pathlib import Path

SAMPLE_DIR = Path(__file__).parent / "sample_data"

#: sample key -> (image file, reference label file)
SAMPLES = {
    "chest_ct": ("chest_ct.nii.gz", "chest_ct_labels.nii.gz"),
    "chest_xray": ("chest_xray.png", "chest_xray_lungs.png"),
}


def sample_paths(key: str) -> tuple[Path, Path]:
    """Image and reference-label paths of a bundled sample."""
    if key not in SAMPLES:
        raise KeyError(f"unknown sample {key!r}; known: {', '.join(SAMPLES)}")
    image, labels = SAMPLES[key]
    return SAMPLE_DIR / image, SAMPLE_DIR / labels
