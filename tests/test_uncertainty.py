"""Uncertainty scores for the next case: Predictor probabilities, entropy, MC dropout, the ranking on disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from napari_cxseg import io
from napari_cxseg.images import CxsegError
from napari_cxseg.inference import Predictor
from napari_cxseg.models.cards import card_from_dict
from napari_cxseg.training.uncertainty import (
    Ranking,
    make_predictor,
    mean_entropy,
    model_identity,
    score_items,
    unlabelled_items,
)
from training_data import film, write_msd_volumes, write_structure_set

torch.set_num_threads(1)


def _card(tmp_path: Path, dims: int, dropout: float = 0.0, name: str = "unc") -> object:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    args = {"spatial_dims": dims, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2],
            "dropout": dropout}
    w = tmp_path / f"{name}.pt"
    torch.save(UNet(**args).state_dict(), w)
    d = {"name": name, "task": "test", "spatial_dims": dims, "network": {"name": "UNet", "args": args},
         "output": {"activation": "softmax", "largest_component": False},
         "classes": {1: {"name": "right lung"}, 2: {"name": "left lung"}},
         "weights": {"source": "file", "file": str(w)}}
    if dims == 2:
        d.update(modality=["XR"], input={"channels": ["radiograph"], "size": [32, 32], "fit": "pad",
                                         "intensity": {"type": "minmax"}},
                 inference={"roi_size": [32, 32], "overlap": 0.0, "sw_batch_size": 1})
    else:
        d.update(modality=["CT"], input={"channels": ["CT"], "orientation": "RAS", "spacing": [4.0, 4.0, 4.0],
                                         "intensity": {"type": "window", "a_min": -200, "a_max": 300}},
                 inference={"roi_size": [8, 8, 8], "overlap": 0.25, "sw_batch_size": 2})
    return card_from_dict(d)


@pytest.mark.parametrize("dims", [2, 3])
def test_predict_probabilities_agree_with_predict(tmp_path, dims):
    card = _card(tmp_path, dims)
    if dims == 2:
        img, _ = film(np.random.default_rng(0), 50)
        PILImage.fromarray(img[:, 5:]).save(tmp_path / "f.png")  # not square: padded in model space
        image = io.read(tmp_path / "f.png")[0]
    else:
        image = io.read(write_msd_volumes(tmp_path / "t", n=1) / "imagesTr" / "vol_000.nii.gz")[0]
    p = Predictor(card, device="cpu")
    probs = p.predict_probabilities(image)
    assert probs.shape == (3, *image.spatial_shape) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(probs.argmax(0), p.predict(image).array)
    model_space = p.predict_probabilities(image, on_source_grid=False)
    assert model_space.shape[0] == 3 and (dims == 3 or model_space.shape[1:] == (32, 32))


def test_mean_entropy_bounds():
    assert mean_entropy(np.full((4, 5, 5), 0.25)) == pytest.approx(1.0)
    sure = np.zeros((3, 6, 6))
    sure[1] = 1
    assert mean_entropy(sure) < 1e-4
    assert mean_entropy(np.full((2, 3, 3), 0.5), "sigmoid") == pytest.approx(1.0)
    assert mean_entropy(np.full((2, 3, 3), 0.01), "sigmoid") < 0.1


def _pool(folder: Path, rng) -> None:
    folder.mkdir(parents=True)
    for i in range(3):
        img, _ = film(rng, 64)
        PILImage.fromarray(img).save(folder / f"clean{i}.png")
        bad = np.clip(img * 0.3 + rng.normal(0, 70, img.shape) + 90, 0, 255).astype(np.uint8)
        PILImage.fromarray(bad).save(folder / f"noisy{i}.png")


@pytest.mark.slow
def test_ranking_follows_uncertainty_and_survives_a_restart(tmp_path):
    """A tiny network trained on clean films is less sure about heavily corrupted ones."""
    from napari_cxseg.training import TrainConfig, Trainer, find_cases
    from test_training import tiny_card_2d

    write_structure_set(tmp_path / "data", n=8, size=64)
    card = card_from_dict(tiny_card_2d())
    res = Trainer(card, find_cases(tmp_path / "data"), [], tmp_path / "out",
                  TrainConfig(epochs=15, batch_size=4, lr=1e-2, threads=1, augment=False), progress=False).fit()
    card = card.with_weights(source="file", file=str(res.weights))
    _pool(tmp_path / "pool", np.random.default_rng(5))
    items = unlabelled_items(tmp_path / "pool")
    ranking = Ranking(tmp_path / "rank.json")
    steps = list(score_items(card, items, ranking, device="cpu"))
    assert len(steps) == 6 and all(s[3] is not None for s in steps)
    order = [it.stem for it, _ in ranking.ranked(items, model_identity(card))]
    assert set(order[:3]) == {"noisy0", "noisy1", "noisy2"}, order
    # a restart reads the scores back and scores nothing again
    again = Ranking(tmp_path / "rank.json")
    assert [it.stem for it, _ in again.ranked(items, model_identity(card))] == order
    gen = score_items(card, items, again, device="cpu")
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == 0
    # a changed file is scored again, the others are kept
    st = os.stat(items[0].path)
    os.utime(items[0].path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert [s[2].stem for s in score_items(card, items, again, device="cpu")] == [items[0].stem]
    # another model (here: other weights) has its own scores
    other = card.with_weights(file=str(tmp_path / "out" / "train" / "last.pt"))
    assert model_identity(other) != model_identity(card)
    assert again.ranked(items, model_identity(other)) == []


def test_mc_dropout_needs_dropout_layers(tmp_path):
    from napari_cxseg.training.uncertainty import score_image

    img, _ = film(np.random.default_rng(0), 40)
    PILImage.fromarray(img).save(tmp_path / "f.png")
    image = io.read(tmp_path / "f.png")[0]
    with pytest.raises(CxsegError, match="no dropout layers"):
        make_predictor(_card(tmp_path, 2), "cpu", "dropout")
    pred = make_predictor(_card(tmp_path, 2, dropout=0.4, name="drop"), "cpu", "dropout")
    a = pred.predict_probabilities(image, on_source_grid=False)
    b = pred.predict_probabilities(image, on_source_grid=False)
    assert not np.allclose(a, b)  # dropout stays on in the Predictor's eval mode
    assert score_image(pred, image, "dropout", samples=4) > 0
    with pytest.raises(CxsegError, match="unknown uncertainty method"):
        make_predictor(_card(tmp_path, 2), "cpu", "variance")


def test_unlabelled_items_from_folder_and_csv(tmp_path):
    _pool(tmp_path / "pool", np.random.default_rng(0))
    folder = unlabelled_items(tmp_path / "pool")
    assert sorted(it.stem for it in folder) == ["clean0", "clean1", "clean2", "noisy0", "noisy1", "noisy2"]
    (tmp_path / "list.csv").write_text("image\npool/clean1.png\npool/noisy2.png\n")
    assert [it.stem for it in unlabelled_items(tmp_path / "list.csv")] == ["clean1", "noisy2"]
    with pytest.raises(CxsegError, match="does not exist"):
        unlabelled_items(tmp_path / "nope")
    bad = Ranking(tmp_path / "broken.json")
    (tmp_path / "broken.json").write_text("{not json")
    assert Ranking(tmp_path / "broken.json").images == {} and bad.opened == []
