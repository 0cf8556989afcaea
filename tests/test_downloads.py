"""Downloads and caches are all or nothing.

A download that stops for any reason (an exception of any type, Ctrl-C, a connection that
drops before Content-Length, a hash mismatch) leaves no file at the target and no ``*.part``;
a cached MONAI bundle is used only when complete and of the version asked for; TorchXRayVision
weights without a published hash are used with a visible warning that names the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from local_server import HTTPS_HOST, LocalServer, route_https
from napari_cxseg.images import CxsegError
from napari_cxseg.models import downloads as D
from napari_cxseg.models import weights as W
from napari_cxseg.models.cards import card_from_bundle, card_from_dict, find_card

BODY = bytes(range(256)) * 40_000  # 10 MB: several read() blocks
SHA = hashlib.sha256(BODY).hexdigest()


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


class _Stream(io.RawIOBase):
    """A fake HTTP response: gives ``blocks`` then raises ``exc`` (or ends)."""

    def __init__(self, blocks: list[bytes], exc: BaseException | None = None,
                 length: int | None = None) -> None:
        self.blocks, self.exc = list(blocks), exc
        self.headers = {"Content-Length": str(length)} if length is not None else {}

    def read(self, n: int = -1) -> bytes:
        if self.blocks:
            return self.blocks.pop(0)
        if self.exc is not None:
            raise self.exc
        return b""


def _fake_open(monkeypatch, stream: _Stream) -> None:
    monkeypatch.setattr(D, "_open", lambda url, timeout: stream)


# ---------------------------------------------------------------------------- download_file
@pytest.mark.parametrize("exc", [RuntimeError("decoder bug"), KeyboardInterrupt(), MemoryError(),
                                 ConnectionResetError("reset by peer")],
                         ids=["RuntimeError", "KeyboardInterrupt", "MemoryError", "ConnectionReset"])
def test_interrupted_download_leaves_nothing(tmp_path, monkeypatch, exc):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "other.pt").write_bytes(b"keep me")
    _fake_open(monkeypatch, _Stream([BODY[:1 << 20], BODY[1 << 20: 2 << 20]], exc, len(BODY)))
    expect = CxsegError if isinstance(exc, OSError) else type(exc)
    with pytest.raises(expect):
        D.download_file(f"{HTTPS_HOST}/net.pt", folder / "net.pt", SHA)
    assert _listing(folder) == ["other.pt"]
    assert (folder / "other.pt").read_bytes() == b"keep me"


def test_interrupted_download_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "net.pt"
    target.write_bytes(b"previous complete file")
    _fake_open(monkeypatch, _Stream([b"new partial"], KeyboardInterrupt(), 10_000))
    with pytest.raises(KeyboardInterrupt):
        D.download_file(f"{HTTPS_HOST}/net.pt", target)
    assert target.read_bytes() == b"previous complete file"
    assert _listing(tmp_path) == ["net.pt"]


def test_short_read_against_content_length_leaves_nothing(tmp_path, monkeypatch):
    """The server announces 10 MB and closes the connection after 3 MB (no sha256 to catch it)."""
    folder = tmp_path / "weights"
    with LocalServer() as server:
        server.files["/net.pt"] = BODY
        server.short["/net.pt"] = 3 << 20
        with pytest.raises(CxsegError, match=rf"gave {3 << 20} of the {len(BODY)} bytes the server announced; nothing was saved"):
            D.download_file(f"{server.url}/net.pt", folder / "net.pt", None, what="weights of model m")
        assert _listing(folder) == []
        # the fake stream variant: fewer bytes than announced, then a clean end
        _fake_open(monkeypatch, _Stream([BODY[:100]], None, len(BODY)))
        with pytest.raises(CxsegError, match=f"gave 100 of the {len(BODY)} bytes"):
            D.download_file(f"{HTTPS_HOST}/net.pt", folder / "net.pt")
        assert _listing(folder) == []


def test_hash_mismatch_leaves_nothing(tmp_path):
    folder = tmp_path / "weights"
    with LocalServer() as server:
        server.files["/net.pt"] = BODY
        with pytest.raises(CxsegError, match=f"sha256 {SHA}, expected {'0' * 64}; nothing was saved"):
            D.download_file(f"{server.url}/net.pt", folder / "net.pt", "0" * 64)
        assert _listing(folder) == []
        assert D.download_file(f"{server.url}/net.pt", folder / "net.pt", SHA).read_bytes() == BODY
    assert _listing(folder) == ["net.pt"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x.pt", "data:,hello",
                                 "http://example.org/x.pt", "gopher://example.org/x"])
def test_download_file_fetches_https_only(tmp_path, url):
    with pytest.raises(CxsegError, match="refused to download .*only https://"):
        D.download_file(url, tmp_path / "x.pt")
    assert _listing(tmp_path) == []


def test_redirects_may_not_leave_https():
    handler = D._HttpsOnlyRedirects()
    req = urllib.request.Request("https://example.org/x.pt")
    for new in ("http://example.org/x.pt", "file:///etc/passwd", "ftp://example.org/x"):
        with pytest.raises(urllib.error.HTTPError, match="refused redirect"):
            handler.redirect_request(req, None, 302, "Found", {}, new)
    assert handler.redirect_request(req, None, 302, "Found", {}, "https://cdn.example.org/x.pt") is not None


def test_card_download_interrupted_then_retried(tmp_path, monkeypatch):
    """Through resolve_weights: Ctrl-C mid-download leaves the cache clean; the next run succeeds."""
    monkeypatch.setenv("CXSEG_CACHE_DIR", str(tmp_path / "cache"))
    card = _url_card(url=f"{HTTPS_HOST}/models/net.pt", sha256=SHA)
    _fake_open(monkeypatch, _Stream([BODY[:1 << 20]], KeyboardInterrupt(), len(BODY)))
    with pytest.raises(KeyboardInterrupt):
        W.resolve_weights(card)
    assert _listing(W.weights_dir()) == []
    assert not W.weights_status(card)[0]
    with LocalServer() as server:
        server.files["/models/net.pt"] = BODY
        route_https(monkeypatch, server)
        assert W.resolve_weights(card).read_bytes() == BODY
    assert _listing(W.weights_dir()) == ["net.pt"]


def _url_card(**weights):
    return card_from_dict({
        "name": "dl", "task": "t", "modality": ["CT"], "spatial_dims": 3,
        "input": {"channels": ["CT"], "orientation": "RAS"},
        "network": {"name": "UNet", "args": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                                             "channels": [2, 4], "strides": [2]}},
        "inference": {"roi_size": [16, 16, 16]}, "classes": {1: "x"},
        "weights": {"source": "url", **weights},
    }, origin="dl.yaml")


# ---------------------------------------------------------------------------- bundles
def _write_bundle(root: Path, version: str = "0.5.9", weights: bool = True, metadata: bool = True,
                  config: bool = True) -> Path:
    (root / "configs").mkdir(parents=True, exist_ok=True)
    if metadata:
        meta = {"version": version, "network_data_format": {
            "inputs": {"image": {"num_channels": 1, "spatial_shape": [96, 96, 96], "modality": "CT"}},
            "outputs": {"pred": {"channel_def": {"0": "background", "1": "spleen"}}}}}
        (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    if config:
        (root / "configs" / "inference.json").write_text("{}")
    if weights:
        (root / "models").mkdir(exist_ok=True)
        (root / "models" / "model.pt").write_bytes(b"weights " + version.encode())
    return root


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    """A fake ``monai.bundle.download`` that writes ``<bundle_dir>/<name>`` like MONAI does."""
    import monai.bundle

    monkeypatch.setenv("CXSEG_CACHE_DIR", str(tmp_path / "cache"))
    calls: list[dict] = []
    state = {"fail": None, "partial": False}

    def download(name=None, version=None, bundle_dir=None, **kw):
        calls.append({"name": name, "version": version, "bundle_dir": bundle_dir})
        dest = Path(bundle_dir) / name
        if state["partial"] or state["fail"] is not None:
            _write_bundle(dest, version or "9.9.9", weights=False)
            if state["fail"] is not None:
                raise state["fail"]
            return
        _write_bundle(dest, version or "9.9.9")

    monkeypatch.setattr(monai.bundle, "download", download)
    return calls, state


def _spleen():
    card = find_card("msd-task09-spleen")
    assert card.weights.bundle == "spleen_ct_segmentation" and card.weights.bundle_version == "0.5.9"
    return card


@pytest.mark.parametrize("broken, problem", [
    ({"weights": False}, "no models/model.pt or models/model.ts"),
    ({"metadata": False}, "no configs/metadata.json"),
    ({"config": False}, "no configs/inference.json"),
    ({"version": "0.5.8"}, "configs/metadata.json says version 0.5.8, not 0.5.9"),
])
def test_incomplete_cached_bundle_is_not_used(zoo, broken, problem):
    calls, _ = zoo
    card = _spleen()
    bdir = W.bundles_dir() / "spleen_ct_segmentation"
    _write_bundle(bdir, **broken)
    with pytest.raises(CxsegError) as e:
        W.resolve_bundle(card, download=False)
    msg = str(e.value)
    assert f"MONAI bundle 'spleen_ct_segmentation' in {bdir} is incomplete" in msg and problem in msg
    assert "--version 0.5.9" in msg and f"copy the folder to {bdir}" in msg
    ok, text = W.weights_status(card)
    assert not ok and problem in text
    assert calls == []
    # online it is fetched again (the version the card asks for) and swapped in
    assert W.resolve_weights(card) == bdir / "models" / "model.pt"
    assert calls[0]["version"] == "0.5.9" and Path(calls[0]["bundle_dir"]).parent == W.bundles_dir()
    assert (bdir / "models" / "model.pt").read_bytes() == b"weights 0.5.9"
    assert json.loads((bdir / "configs" / "metadata.json").read_text())["version"] == "0.5.9"
    assert _listing(W.bundles_dir()) == ["spleen_ct_segmentation"]
    assert W.weights_status(card) == (True, f"bundle {bdir}")


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("unzip failed"),
                                 urllib.error.URLError("offline")], ids=["Ctrl-C", "RuntimeError", "URLError"])
def test_interrupted_bundle_download_leaves_nothing(zoo, exc):
    calls, state = zoo
    state["fail"] = exc
    card = _spleen()
    with pytest.raises(KeyboardInterrupt if isinstance(exc, KeyboardInterrupt) else CxsegError):
        W.resolve_bundle(card)
    assert len(calls) == 1
    assert _listing(W.bundles_dir()) == []


def test_incomplete_bundle_download_is_not_kept(zoo):
    calls, state = zoo
    state["partial"] = True  # monai "succeeds" but the weights never arrived
    card = _spleen()
    old = _write_bundle(W.bundles_dir() / "spleen_ct_segmentation", version="0.5.8")
    with pytest.raises(CxsegError, match=r"downloaded MONAI bundle 'spleen_ct_segmentation' is incomplete \(no models/model.pt"):
        W.resolve_bundle(card)
    assert _listing(W.bundles_dir()) == ["spleen_ct_segmentation"]  # the old one, untouched
    assert (old / "models" / "model.pt").read_bytes() == b"weights 0.5.8"


def test_complete_cached_bundle_is_used_without_download(zoo):
    calls, _ = zoo
    card = _spleen()
    bdir = _write_bundle(W.bundles_dir() / "spleen_ct_segmentation")
    assert W.resolve_bundle(card, download=False) == bdir
    assert W.resolve_bundle(card) == bdir and calls == []


def test_users_incomplete_bundle_folder_is_left_alone(zoo, tmp_path):
    calls, _ = zoo
    mine = _write_bundle(tmp_path / "mine" / "my_bundle", version="1.0", weights=False)
    before = sorted(str(p) for p in mine.rglob("*"))
    card = card_from_bundle(mine)
    with pytest.raises(CxsegError, match=r"bundle .*my_bundle is incomplete \(no models/model.pt.*left as it is"):
        W.resolve_bundle(card)
    assert calls == [] and sorted(str(p) for p in mine.rglob("*")) == before
    assert not W.weights_status(card)[0]


# ---------------------------------------------------------------------------- TorchXRayVision
def test_torchxrayvision_weights_unverified_warning_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CXSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(W, "TORCHXRAYVISION_DIR", tmp_path / "xrv")
    card = find_card("cxr-anatomy")
    assert card.weights.source == "torchxrayvision" and card.weights.sha256 is None
    # TorchXRayVision's own download is reused, with a warning naming it
    own = tmp_path / "xrv" / "pspnet_chestxray_best_model_4.pth"
    own.parent.mkdir()
    own.write_bytes(b"xrv weights")
    with pytest.warns(W.UnverifiedWeightsWarning, match=rf"{own}.* unverified \(the card gives no sha256\)"):
        assert W.resolve_weights(card) == own
    ok, text = W.weights_status(card)
    assert str(own) in text and "unverified" in text
    own.unlink()
    # a fresh download warns too, naming the cached file
    with LocalServer() as server:
        server.files["/xrv/pspnet_chestxray_best_model_4.pth"] = b"downloaded"
        route_https(monkeypatch, server)
        card = card.with_weights(url=f"{HTTPS_HOST}/xrv/pspnet_chestxray_best_model_4.pth")
        target = W.weights_dir() / "pspnet_chestxray_best_model_4.pth"
        with pytest.warns(W.UnverifiedWeightsWarning, match=str(target)):
            assert W.resolve_weights(card) == target
    assert issubclass(W.UnverifiedWeightsWarning, UserWarning)


def test_torchxrayvision_weights_hash_checked_when_the_card_has_one(tmp_path, monkeypatch):
    import warnings

    monkeypatch.setenv("CXSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(W, "TORCHXRAYVISION_DIR", tmp_path / "xrv")
    own = tmp_path / "xrv" / "pspnet_chestxray_best_model_4.pth"
    own.parent.mkdir()
    own.write_bytes(b"xrv weights")
    card = find_card("cxr-anatomy").with_weights(sha256=hashlib.sha256(b"xrv weights").hexdigest())
    with warnings.catch_warnings():
        warnings.simplefilter("error", W.UnverifiedWeightsWarning)
        assert W.resolve_weights(card) == own
    with pytest.raises(CxsegError, match=rf"{own} has sha256 .*expected {'1' * 64}"):
        W.resolve_weights(card.with_weights(sha256="1" * 64))
