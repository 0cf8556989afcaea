"""The README's main job: the demo segments the bundled samples and writes labels + pictures."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

from napari_cxseg.sample_data_files import sample_paths

pytestmark = pytest.mark.slow


def test_headless_demo_segments_samples(tmp_path, monkeypatch):
    from napari_cxseg.demo import run_demo

    monkeypatch.setenv("CXSEG_DEMO_HEADLESS", "1")
    assert run_demo(tmp_path) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    by_sample = {c["sample"]: c for c in summary["cases"]}
    cxr, ct = by_sample["chest_xray"], by_sample["chest_ct"]
    assert cxr["dice"]["right lung"] > 0.88 and cxr["dice"]["left lung"] > 0.88  # a DRR: sanity only
    assert ct["dice"]["liver"] > 0.8 and ct["dice"]["right lung"] > 0.9
    lungs = np.asarray(PILImage.open(cxr["labels"]))
    cols = np.nonzero(lungs == 1)[1].mean(), np.nonzero(lungs == 2)[1].mean()
    assert cols[0] < cols[1], "right lung must be on the image's left (PA view)"
    seg = nib.load(ct["labels"])
    src = nib.load(str(sample_paths("chest_ct")[0]))
    assert seg.shape == src.shape
    np.testing.assert_array_equal(seg.affine, src.affine)
    for shot in summary["screenshots"]:
        assert PILImage.open(shot).size[0] > 100
    clicks = {(c["sample"], c["object"]): c["dice_per_click"] for c in summary["click_to_segment"]}
    assert max(clicks[("chest_xray", "right lung")]) > 0.8 and max(clicks[("chest_ct", "heart")]) > 0.75
