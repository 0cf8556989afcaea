"""Weights: cache folder, verified downloads, clear offline errors, weights_only loading."""

from __future__ import annotations

import hashlib
import pickle
import urllib.error
from pathlib import Path

import pytest
import torch

from local_server import HTTPS_HOST, LocalServer, route_https
from napari_cxseg.images import CxsegError
from napari_cxseg.models import weights as W
from napari_cxseg.models.cards import card_from_dict


def _card(**weights):
    return card_from_dict({
        "name": "wtest",
        "task": "t",
        "modality": ["CT"],
        "spatial_dims": 3,
        "input": {"channels": ["CT"], "orientation": "RAS"},
        "network": {"name": "UNet", "args": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                                             "channels": [2, 4], "strides": [2]}},
        "inference": {"roi_size": [16, 16, 16]},
        "classes": {1: "x"},
        "weights": weights,
    }, origin="wtest.yaml")


def _tiny_weights(path: Path) -> str:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    torch.save(UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(2, 4), strides=(2,)).state_dict(), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CXSEG_CACHE_DIR", str(tmp_path / "c"))
    assert W.cache_dir() == tmp_path / "c"
    assert W.weights_dir() == tmp_path / "c" / "weights"
    monkeypatch.delenv("CXSEG_CACHE_DIR")
    assert W.cache_dir() == Path.home() / ".cache" / "napari-cxseg"


def test_url_download_checks_sha256(tmp_path, monkeypatch):
    monkeypatch.setenv("CXSEG_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "remote" / "net.pt"
    src.parent.mkdir()
    digest = _tiny_weights(src)
    with LocalServer() as server:
        server.files["/models/net.pt"] = src.read_bytes()
        route_https(monkeypatch, server)
        card = _card(source="url", url=f"{HTTPS_HOST}/models/net.pt", sha256=digest)
        got = W.resolve_weights(card)
        assert got == tmp_path / "cache" / "weights" / "net.pt"
        assert got.read_bytes() == src.read_bytes()
        from napari_cxseg.models.networks import load_network

        assert load_network(card).training is False

        bad = _card(source="url", url=f"{HTTPS_HOST}/models/net.pt", sha256="0" * 64, file="other.pt")
        with pytest.raises(CxsegError, match=f"sha256 {digest}, expected 0000.*nothing was saved"):
            W.resolve_weights(bad)
    assert sorted(p.name for p in (tmp_path / "cache" / "weights").iterdir()) == ["net.pt"]
    # a corrupted cached file is caught too
    got.write_bytes(b"corrupt")
    with pytest.raises(CxsegError, match="has sha256 .* expected"):
        W.resolve_weights(card)


def test_offline_error_names_file_url_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("CXSEG_CACHE_DIR", str(tmp_path / "cache"))
    url = "https://127.0.0.1:9/models/lungs_v3.pt"  # discard port: connection refused, like offline
    card = _card(source="url", url=url, sha256="a" * 64)
    with pytest.raises(CxsegError) as e:
        W.resolve_weights(card)
    msg = str(e.value)
    target = tmp_path / "cache" / "weights" / "lungs_v3.pt"
    assert "lungs_v3.pt" in msg and url in msg and f"put it at {target}" in msg
    ok, text = W.weights_status(card)
    assert not ok and url in text and str(target) in text


def test_missing_file_source_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CXSEG_CACHE_DIR", str(tmp_path / "cache"))
    card = _card(source="file", file="liver.pt")
    with pytest.raises(CxsegError, match=f"weights file liver.pt not found; put it at {tmp_path / 'cache' / 'weights' / 'liver.pt'}"):
        W.resolve_weights(card)
    (tmp_path / "cache" / "weights").mkdir(parents=True)
    _tiny_weights(tmp_path / "cache" / "weights" / "liver.pt")
    assert W.resolve_weights(card) == tmp_path / "cache" / "weights" / "liver.pt"
    assert W.weights_status(card)[0]


def test_bundle_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CXSEG_CACHE_DIR", str(tmp_path / "cache"))
    card = _card(source="bundle", bundle="spleen_ct_segmentation")
    with pytest.raises(CxsegError, match="MONAI bundle 'spleen_ct_segmentation' is not in .*bundles/spleen_ct_segmentation"):
        W.resolve_bundle(card, download=False)

    import monai.bundle

    def offline(**kw):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(monai.bundle, "download", offline)
    with pytest.raises(CxsegError) as e:
        W.resolve_weights(card)
    msg = str(e.value)
    assert "could not download MONAI bundle 'spleen_ct_segmentation'" in msg
    assert str(tmp_path / "cache" / "bundles" / "spleen_ct_segmentation") in msg


class Evil:
    """Unpickling this would run code (here: write a file)."""

    marker = None

    def __reduce__(self):
        return (Path.write_text, (Path(Evil.marker), "pwned"))


def test_weights_only_refuses_pickled_code(tmp_path):
    marker = tmp_path / "marker.txt"
    Evil.marker = str(marker)
    p = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": Evil()}, p)
    assert not marker.exists()
    with pytest.raises(CxsegError, match="was refused: it holds more than tensors"):
        W.load_state_dict(p)
    assert not marker.exists()
    # plain pickle of a custom class (not a torch file at all) is refused too
    q = tmp_path / "plain.pkl"
    q.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CxsegError):
        W.load_state_dict(q)
    assert not marker.exists()


def test_checkpoint_unwrapping_and_prefixes(tmp_path):
    from monai.networks.nets import UNet

    net = UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(2, 4), strides=(2,))
    sd = net.state_dict()
    assert all(k.startswith("model.") for k in sd)  # MONAI's own names start with "model."
    p = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, p)
    loaded = W.load_state_dict(p)
    assert set(loaded) == set(sd)  # "module." stripped, MONAI's "model." kept
    fresh = UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(2, 4), strides=(2,))
    W.load_into(fresh, p)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in sd.items())
    # CheckpointLoader-style {"model": sd} with keys lacking MONAI's prefix
    q = tmp_path / "ckpt2.pt"
    torch.save({"model": {k[len("model."):]: v for k, v in sd.items()}}, q)
    W.load_into(fresh, q)
    wrong = UNet(spatial_dims=2, in_channels=1, out_channels=3, channels=(2, 4), strides=(2,))
    with pytest.raises(CxsegError, match="do not fit the network.*check the card's network args"):
        W.load_into(wrong, p)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CxsegError, match="could not be read as PyTorch weights"):
        W.load_state_dict(tmp_path / "empty.pt")
