"""Batch prefetch: cases prepared in DataLoader workers give the labels of a plain predict, in order.

A file that cannot be read comes back as that case's error (the others still run), and bundles
and ``workers=0`` take the in-process path with the same results.
"""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage

from napari_cxseg.inference import Predictor
from napari_cxseg.inputs import InputItem, read_image
from napari_cxseg.prefetch import prepared_cases
from napari_cxseg.sample_data_files import sample_paths


def _films(tmp_path, n=3):
    src = PILImage.open(sample_paths("chest_xray")[0]).convert("L")
    items = []
    for i in range(n):
        p = tmp_path / f"film_{i}.png"
        src.resize((120 + 20 * i, 110 + 10 * i)).save(p)
        items.append(InputItem(path=p, stem=p.stem))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    items.insert(1, InputItem(path=bad, stem="broken"))
    return items


def test_workers_give_plain_predict_labels_in_order(tmp_path):
    items = _films(tmp_path)
    predictor = Predictor("cxr-lungs", device="cpu")
    got = list(prepared_cases(predictor, items, workers=1))
    assert [it.stem for it, _, _ in got] == [it.stem for it in items]
    it, prepared, error = got[1]
    assert prepared is None and "broken.png" in error
    for it, prepared, error in got[:1] + got[2:]:
        assert error == "" and prepared is not None
        ours = predictor.predict(None, prepared=prepared)
        ref = predictor.predict(read_image(it))
        np.testing.assert_array_equal(ours.array, ref.array)
        assert ours.array.shape == ref.array.shape == np.asarray(PILImage.open(it.path)).shape


def test_in_process_path_matches(tmp_path):
    items = _films(tmp_path, 2)
    predictor = Predictor("cxr-lungs", device="cpu")
    with_workers = [(it.stem, p, e) for it, p, e in prepared_cases(predictor, items, workers=1)]
    here = [(it.stem, p, e) for it, p, e in prepared_cases(predictor, items, workers=0)]
    assert [s for s, _, _ in with_workers] == [s for s, _, _ in here]
    for (_, a, ea), (_, b, eb) in zip(with_workers, here, strict=True):
        assert (a is None) == (b is None) and ea == eb
        if a is not None:
            np.testing.assert_array_equal(predictor.predict(None, prepared=a).array,
                                          predictor.predict(None, prepared=b).array)
