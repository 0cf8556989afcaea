"""Cards are data: a hostile card is refused when it is loaded, naming the card and the field,
and no card field can make the engine write outside its cache, whatever path builds the card.

Each test watches the whole temporary folder (cache, card folder and the places an escape
would land) and checks that nothing appeared there.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml

from local_server import HTTPS_HOST, LocalServer, route_https
from napari_cxseg.images import CxsegError
from napari_cxseg.models import weights as W
from napari_cxseg.models.cards import card_from_bundle, find_card, list_cards, load_card

SHA = "ab" * 32
GOOD = {
    "name": "evil",
    "task": "t",
    "modality": ["CT"],
    "spatial_dims": 3,
    "input": {"channels": ["CT"], "orientation": "RAS"},
    "network": {"name": "UNet", "args": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                                         "channels": [2, 4], "strides": [2]}},
    "inference": {"roi_size": [16, 16, 16]},
    "classes": {1: "x"},
    "weights": {"source": "url", "url": f"{HTTPS_HOST}/net.pt", "sha256": SHA},
}


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every file and folder under ``root`` with its bytes (folders: None)."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = Path(p).read_bytes()
    return out


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A cache at tmp/home/cache, cards in tmp/home/in; escapes would land in tmp/home or tmp."""
    home = tmp_path / "home"
    (home / "in").mkdir(parents=True)
    (home / ".bashrc").write_text("# the user's own\n")
    monkeypatch.setenv("CXSEG_CACHE_DIR", str(home / "cache"))
    monkeypatch.setattr(W, "TORCHXRAYVISION_DIR", home / "xrv")
    return tmp_path


def _weights(**w):
    d = json.loads(json.dumps(GOOD))
    d["weights"] = w
    return d


# (weights, refused field, text the message must contain)
HOSTILE = [
    # weights.file of the sources whose file lives in the cache or the package
    ({"source": "url", "url": f"{HTTPS_HOST}/n.pt", "sha256": SHA, "file": "../../.bashrc"},
     "weights.file", "'../../.bashrc'"),
    ({"source": "url", "url": f"{HTTPS_HOST}/n.pt", "sha256": SHA, "file": "sub/n.pt"},
     "weights.file", "path separator"),
    ({"source": "url", "url": f"{HTTPS_HOST}/n.pt", "sha256": SHA, "file": "..\\..\\.bashrc"},
     "weights.file", "path separator"),
    ({"source": "url", "url": f"{HTTPS_HOST}/n.pt", "sha256": SHA, "file": "/tmp/evil.pt"},
     "weights.file", "path separator"),
    ({"source": "url", "url": f"{HTTPS_HOST}/n.pt", "sha256": SHA, "file": "C:evil.pt"},
     "weights.file", "drive letter"),
    ({"source": "url", "url": f"{HTTPS_HOST}/n.pt", "sha256": SHA, "file": "C:\\Windows\\evil.pt"},
     "weights.file", "must be a plain file name inside the weights cache"),
    ({"source": "url", "url": f"{HTTPS_HOST}/n.pt", "sha256": SHA, "file": "evil\x00.pt"},
     "weights.file", "NUL"),
    ({"source": "url", "url": f"{HTTPS_HOST}/n.pt", "sha256": SHA, "file": ".."},
     "weights.file", "'..'"),
    ({"source": "url", "url": f"{HTTPS_HOST}/n.pt", "sha256": SHA, "file": "  "},
     "weights.file", "space"),
    ({"source": "url", "url": f"{HTTPS_HOST}/n.pt", "sha256": SHA, "file": "NUL.pt"},
     "weights.file", "device name"),
    ({"source": "package", "file": "../../../../.bashrc"}, "weights.file", "package weights folder"),
    ({"source": "package", "file": "/etc/passwd"}, "weights.file", "package weights folder"),
    ({"source": "torchxrayvision", "url": f"{HTTPS_HOST}/x.pth", "file": "../x.pth"},
     "weights.file", "weights cache"),
    ({"source": "bundle", "bundle": "spleen", "file": "../model.pt"}, "weights.file", "weights cache"),
    # a url whose last segment is the file name must end in a plain name
    ({"source": "url", "url": f"{HTTPS_HOST}/a/%2e%2e", "sha256": SHA}, "weights.url", "plain file name"),
    ({"source": "url", "url": f"{HTTPS_HOST}/a/..%2f..%2f.bashrc", "sha256": SHA}, "weights.url",
     "plain file name"),
    ({"source": "url", "url": f"{HTTPS_HOST}/", "sha256": SHA}, "weights.url", "empty"),
    # URLs are https
    ({"source": "url", "url": "http://example.org/n.pt", "sha256": SHA}, "weights.url", "https://"),
    ({"source": "url", "url": "http://127.0.0.1/n.pt", "sha256": SHA}, "weights.url", "https://"),
    ({"source": "url", "url": "file:///home/user/.ssh/id_rsa", "sha256": SHA}, "weights.url", "https://"),
    ({"source": "url", "url": "ftp://example.org/n.pt", "sha256": SHA}, "weights.url", "https://"),
    ({"source": "url", "url": "data:application/octet-stream;base64,AAAA", "sha256": SHA},
     "weights.url", "https://"),
    ({"source": "url", "url": "https:///n.pt", "sha256": SHA}, "weights.url", "no host"),
    ({"source": "url", "url": "https://example.org/a b.pt", "sha256": SHA}, "weights.url", "spaces"),
    ({"source": "torchxrayvision", "url": "http://example.org/x.pth"}, "weights.url", "https://"),
    # a url source carries a well-formed sha256
    ({"source": "url", "url": f"{HTTPS_HOST}/n.pt"}, "weights.sha256", "is missing"),
    ({"source": "url", "url": f"{HTTPS_HOST}/n.pt", "sha256": "abc123"}, "weights.sha256", "64 hex"),
    ({"source": "url", "url": f"{HTTPS_HOST}/n.pt", "sha256": "g" * 64}, "weights.sha256", "64 hex"),
    # bundle names are zoo names, versions are version words
    ({"source": "bundle", "bundle": "../../home"}, "weights.bundle", "Model Zoo bundle name"),
    ({"source": "bundle", "bundle": "/abs/bundle"}, "weights.bundle", "open the folder itself"),
    ({"source": "bundle", "bundle": "a/b"}, "weights.bundle", "path separator"),
    ({"source": "bundle", "bundle": "C:\\bundles\\x"}, "weights.bundle", "path separator"),
    ({"source": "bundle", "bundle": "spleen?x=1"}, "weights.bundle", "only letters"),
    ({"source": "bundle", "bundle": "spleen", "bundle_version": "../../../x"},
     "weights.bundle_version", "version"),
]


@pytest.mark.parametrize("weights, field, text", HOSTILE, ids=[f"{h[1]}={h[0].get('file') or h[0].get('bundle_version') or h[0].get('url') or h[0].get('bundle') or h[0].get('sha256')!r}"[:60] for h in HOSTILE])
def test_hostile_card_refused_at_load(world, weights, field, text):
    card_file = world / "home" / "in" / "evil.yaml"
    card_file.write_text(yaml.safe_dump(_weights(**weights)))
    before = _tree(world)
    with pytest.raises(CxsegError) as e:
        load_card(card_file)
    msg = str(e.value)
    assert msg.startswith(f"model card {card_file}: field '{field}' "), msg
    assert text in msg, msg
    assert _tree(world) == before


def test_refusal_message_shows_the_value(world):
    card_file = world / "home" / "in" / "evil.yaml"
    card_file.write_text(yaml.safe_dump(_weights(source="url", url=f"{HTTPS_HOST}/n.pt", sha256=SHA,
                                                 file="../../.bashrc")))
    with pytest.raises(CxsegError) as e:
        load_card(card_file)
    assert str(e.value).startswith(
        f"model card {card_file}: field 'weights.file' must be a plain file name inside the weights "
        "cache, got '../../.bashrc'"
    )


# Cards built in code skip load-time validation; the cache itself must still refuse them.
ESCAPES = [
    ("url", {"file": "../../.bashrc"}),
    ("url", {"file": "../escaped.pt"}),
    ("url", {"file": None, "url": f"{HTTPS_HOST}/a/..%2f..%2fescaped.pt"}),
    ("url", {"file": None, "url": f"{HTTPS_HOST}/a/%2e%2e"}),
    ("url", {"file": "<absolute>"}),
    ("torchxrayvision", {"file": "../../.bashrc", "sha256": None}),
    ("package", {"file": "../../../.bashrc", "url": None}),
]


@pytest.mark.parametrize("source, change", ESCAPES)
def test_cache_refuses_escaping_names_even_from_code(world, monkeypatch, source, change):
    home = world / "home"
    good = load_card(_write(home / "in" / "good.yaml", GOOD))
    payload = b"#!/bin/sh\necho pwned\n"
    # the hash matches the payload: only the path rule stands between it and the user's files
    change = {k: str(world / "abs-escaped.pt") if v == "<absolute>" else v for k, v in change.items()}
    card = good.with_weights(source=source, **{"sha256": hashlib.sha256(payload).hexdigest(), **change})
    with LocalServer() as server:
        for path in ("/net.pt", "/a/..%2f..%2fescaped.pt", "/a/%2e%2e"):
            server.files[path] = payload
        route_https(monkeypatch, server)
        before = _tree(world)
        with pytest.raises(CxsegError, match=r"field 'weights\.(file|url)' must be .*plain file name"):
            W.resolve_weights(card)
        with pytest.raises(CxsegError, match="plain file name"):
            W.expected_weights_path(card)
        ok, text = W.weights_status(card)
        assert not ok and "plain file name" in text
        assert server.requests == []
    assert _tree(world) == before
    assert (home / ".bashrc").read_text() == "# the user's own\n"
    assert not (world / "abs-escaped.pt").exists()


@pytest.mark.parametrize("bundle", ["../../home", "/abs/bundle", "a/b", "..", "x\x00y"])
def test_bundle_cache_refuses_paths_from_code(world, monkeypatch, bundle):
    import monai.bundle

    calls = []
    monkeypatch.setattr(monai.bundle, "download", lambda **kw: calls.append(kw))
    good = load_card(_write(world / "home" / "in" / "b.yaml", _weights(source="bundle", bundle="spleen")))
    card = good.with_weights(bundle=bundle)
    before = _tree(world)
    for fn in (W.resolve_bundle, W.resolve_weights, W.bundle_path, W.expected_weights_path):
        with pytest.raises(CxsegError, match=r"field 'weights\.bundle' must be a MONAI Model Zoo bundle name"):
            fn(card)
    assert not W.weights_status(card)[0]
    assert calls == [] and _tree(world) == before


def test_copy_into_cache_stays_inside_and_never_writes_through_links(world):
    home = world / "home"
    src = home / "in" / "mine.pt"
    src.write_bytes(b"weights")
    before = _tree(world)
    for name in ("../../.bashrc", "/etc/passwd", "a/b.pt", "C:x.pt"):
        with pytest.raises(CxsegError, match="field 'name' must be a plain file name"):
            W.copy_into_cache(src, name)
    assert _tree(world) == before
    # a link in the cache pointing outside is replaced, not written through
    (home / "cache" / "weights").mkdir(parents=True)
    (home / "cache" / "weights" / "linked.pt").symlink_to(home / ".bashrc")
    got = W.copy_into_cache(src, "linked.pt")
    assert got.read_bytes() == b"weights" and not got.is_symlink()
    assert (home / ".bashrc").read_text() == "# the user's own\n"
    assert sorted(p.name for p in got.parent.iterdir()) == ["linked.pt"]


def test_file_source_is_only_read(world):
    """A `file` / `torchscript` card's path is the user's: never written, copied over or deleted."""
    import torch

    mine = world / "home" / "mine"
    mine.mkdir()
    weights = mine / "liver.pt"
    torch.save({"w": torch.zeros(1)}, weights)
    st = weights.stat()
    good = load_card(_write(world / "home" / "in" / "f.yaml", GOOD))
    for source in ("file", "torchscript"):
        card = good.with_weights(source=source, file=str(weights), url=None, sha256=None)
        before = _tree(world)
        assert W.expected_weights_path(card) == weights
        assert W.resolve_weights(card) == weights
        assert W.weights_status(card) == (True, str(weights))
        assert W.copy_into_cache(weights, "liver.pt").read_bytes() == weights.read_bytes()
        after = _tree(world)
        assert {k: v for k, v in after.items() if not k.startswith(os.path.join("home", "cache"))} == \
            {k: v for k, v in before.items() if not k.startswith(os.path.join("home", "cache"))}
        assert weights.stat().st_mtime_ns == st.st_mtime_ns and weights.stat().st_ino == st.st_ino
    # copying a file onto itself leaves it alone
    cached = W.weights_dir() / "liver.pt"
    ino = cached.stat().st_ino
    assert W.copy_into_cache(cached) == cached and cached.stat().st_ino == ino


def test_hostile_user_card_is_refused_like_any_other(world):
    udir = world / "home" / "cache" / "cards"
    udir.mkdir(parents=True)
    bad = _weights(source="url", url="http://example.org/n.pt", sha256=SHA)
    _write(udir / "evil.yaml", bad)
    before = _tree(world)
    errors: list = []
    names = [c.name for c in list_cards(errors)]
    assert "evil" not in names
    assert [(p.name, "field 'weights.url'" in m) for p, m in errors] == [("evil.yaml", True)]
    with pytest.raises(CxsegError, match=rf"model card {udir / 'evil.yaml'}: field 'weights.url' must be an https://"):
        find_card("evil")
    assert _tree(world) == before


def _bundle(root: Path, meta: object) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    return root


META = {
    "version": "0.1.0",
    "network_data_format": {
        "inputs": {"image": {"num_channels": 1, "spatial_shape": [96, 96, 96], "modality": "CT"}},
        "outputs": {"pred": {"channel_def": {"0": "background", "1": "spleen"}}},
    },
}


@pytest.mark.parametrize("change, field", [
    ({"version": "../../../escaped"}, "version"),
    ({"version": "1.0/../../x"}, "version"),
    ({"version": {"nested": 1}}, "version"),
    ({"network_data_format": {"inputs": {"image": {}}, "outputs": {"pred": {"channel_def": {"x": "a"}}}}},
     "network_data_format.outputs.pred"),
    ({"network_data_format": {"inputs": {"image": {"channel_def": []}},
                              "outputs": {"pred": {"channel_def": {"0": "a"}}}}},
     "network_data_format.inputs.image.channel_def"),
])
def test_card_from_bundle_metadata_goes_through_the_same_checks(world, change, field):
    bdir = _bundle(world / "home" / "in" / "my_bundle", {**META, **change})
    before = _tree(world)
    with pytest.raises(CxsegError) as e:
        card_from_bundle(bdir)
    msg = str(e.value)
    assert msg.startswith(f"model card {bdir / 'configs' / 'metadata.json'}: field '{field}'"), msg
    assert _tree(world) == before


def test_card_from_bundle_metadata_that_is_not_an_object(world):
    bdir = _bundle(world / "home" / "in" / "b", ["not", "a", "mapping"])
    with pytest.raises(CxsegError, match=r"metadata.json: field '<top level>' must be a mapping"):
        card_from_bundle(bdir)


def test_a_bundle_folder_the_user_opened_is_allowed(world):
    bdir = _bundle(world / "home" / "in" / "my bundle", META)
    card = card_from_bundle(bdir)
    assert card.weights.bundle == str(bdir.resolve()) and card.weights.bundle_version == "0.1.0"
    assert W.bundle_path(card) == bdir.resolve()


def _write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path
