"""Fuzz cases for MSD task folders and model cards, and the JSON/YAML mutations they share.

MSD seeds: a Task09-like folder (the real ``dataset.json`` form of the decathlon, with the
sample chest CT's crop as image and label) and an nnU-Net v2 one. Card seeds: the shipped cards
(``src/napari_cxseg/cards/*.yaml``). Mutations: every value of the parsed file replaced by hostile
ones (wrong types, NaN and infinities, paths with ``..``, huge, nested), keys removed, the text
truncated or damaged, YAML's own traps (alias bombs, deep nesting, tags, several documents), and
links out of the folder.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from fuzz_cases import Builder, Case, byte_variants, gz, link_cases, sparse_file

CARDS = Path(__file__).resolve().parent.parent / "src" / "napari_cxseg" / "cards"
#: Values a malformed file puts where a real one has something sensible.
HOSTILE: list[Any] = [None, "", [], {}, 0, -1, 1.5, 1e308, -1e308, True, "../../../etc/passwd",
                      "/etc/passwd", "x" * 5000, [None], {"": None}, [[[[[]]]]], "$__import__('os')",
                      "@missing", "%missing.json#a", "nul\x00char", 10**30, [1] * 2000, {"1": {"2": {"3": [4]}}}]


def value_paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys and indices) to a value inside ``obj``."""
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += value_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:20]):
            out += value_paths(v, prefix + (i,))
    return out


def _at(obj: Any, path: tuple) -> Any:
    for k in path:
        obj = obj[k]
    return obj


def changed(obj: Any, path: tuple, value: Any = None, delete: bool = False) -> Any:
    """A copy of ``obj`` with the value at ``path`` replaced (or deleted)."""
    new = copy.deepcopy(obj)
    node = new
    for k in path[:-1]:
        node = node[k]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = copy.deepcopy(value)
    return new


def structure_variants(rng, obj: Any, n: int) -> list[tuple[str, Any]]:
    """``n`` variants of a parsed JSON/YAML document: hostile values and deletions."""
    paths = value_paths(obj)
    mappings = [()] + [p for p in paths if isinstance(_at(obj, p), dict)]
    out = []
    for k in range(n):
        path = rng.choice(paths)
        shown = "/".join(str(p) for p in path)
        if k % 7 == 6:  # YAML keys may be numbers, null or booleans
            where = rng.choice(mappings)
            key = rng.choice([1, None, True, 2.5])
            out.append((f"{'/'.join(map(str, where)) or '<top>'} gets the key {key!r}", changed(obj, (*where, key), "x")))
        elif k % 5 == 4:
            out.append((f"{shown} deleted", changed(obj, path, delete=True)))
        else:
            value = rng.choice(HOSTILE)
            out.append((f"{shown} = {json.dumps(value)[:40]}", changed(obj, path, value)))
    return out


def json_text_variants(text: str) -> list[tuple[str, bytes]]:
    """Documents that are not the expected JSON object at all."""
    return [
        ("deeply nested JSON", b"[" * 100000 + b"]" * 100000),
        ("a JSON list", b"[1, 2]"), ("a JSON string", b'"dataset"'), ("null", b"null"),
        ("empty", b""), ("whitespace", b"  \n\t "), ("UTF-8 BOM", b"\xef\xbb\xbf" + text.encode()),
        ("UTF-16", text.encode("utf-16")), ("not UTF-8", b"\xff\xfe\xfa" + text.encode()[3:]),
        ("NaN and Infinity literals", text.replace("1", "NaN", 1).replace("2", "Infinity", 1).encode()),
        ("a duplicated key", text.replace("{", '{"name": 1, ', 1).encode()),
        ("a 10**6-digit number", text.replace("{", '{"big": ' + "9" * 1_000_000 + ", ", 1).encode()),
        ("gzipped", gz(text.encode())),
    ]


# ------------------------------------------------------------------------------ MSD
def _task(d: Path, props: dict, images: dict[str, bytes]) -> Path:
    task = d / "Task09_Spleen"
    task.mkdir()
    for rel, data in images.items():
        (task / rel).parent.mkdir(parents=True, exist_ok=True)
        (task / rel).write_bytes(data)
    (task / "dataset.json").write_text(json.dumps(props))
    return task


def msd_seed() -> tuple[dict, dict[str, bytes], dict, dict[str, bytes]]:
    """The decathlon form and the nnU-Net v2 form: ``(dataset.json, {relative path: bytes})``."""
    from fuzz_images import _nifti_seeds

    seeds = {name: raw for name, raw, _ in _nifti_seeds()}
    image, label = gz(seeds["chest_ct.nii.gz"]), gz(seeds["chest_ct_labels.nii.gz"])
    props = {"name": "Spleen", "description": "Spleen Segmentation", "reference": "Memorial Sloan Kettering Cancer Center",
             "licence": "CC-BY-SA 4.0", "release": "1.0 06/08/2018", "tensorImageSize": "3D",
             "modality": {"0": "CT"}, "labels": {"0": "background", "1": "spleen"}, "numTraining": 2, "numTest": 1,
             "training": [{"image": "./imagesTr/spleen_2.nii.gz", "label": "./labelsTr/spleen_2.nii.gz"},
                          {"image": "./imagesTr/spleen_3.nii.gz", "label": "./labelsTr/spleen_3.nii.gz"}],
             "test": ["./imagesTs/spleen_1.nii.gz"]}
    files = {"imagesTr/spleen_2.nii.gz": image, "labelsTr/spleen_2.nii.gz": label,
             "imagesTr/spleen_3.nii.gz": image, "labelsTr/spleen_3.nii.gz": label, "imagesTs/spleen_1.nii.gz": image}
    v2 = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "spleen": 1}, "numTraining": 1, "file_ending": ".nii.gz"}
    v2_files = {"imagesTr/spleen_2_0000.nii.gz": image, "labelsTr/spleen_2.nii.gz": label}
    return props, files, v2, v2_files


def msd_cases(root: Path) -> list[Case]:
    """MSD task folders (``io.read`` of the folder or its ``dataset.json``), about 330."""
    from fuzz_images import _mutated_header, _nifti_seeds

    b = Builder(root, "msd", seed=7, needs="monai")
    props, files, v2, v2_files = msd_seed()
    rng = b.rng

    def case(what: str, p: dict | bytes, fs: dict[str, bytes], **kw: Any) -> None:
        d = b.folder()
        task = _task(d, p if isinstance(p, dict) else {}, fs)
        if isinstance(p, bytes):
            (task / "dataset.json").write_bytes(p)
        target = task / "dataset.json" if len(b.cases) % 3 == 2 else task
        b.add(what, target, d, names=[task.name], **kw)

    for what, p in structure_variants(rng, props, 150):
        case(what, p, files)
    for what, p in structure_variants(rng, v2, 40):
        case(f"nnU-Net v2: {what}", p, v2_files)
    text = json.dumps(props)
    for what, data in byte_variants(rng, text.encode(), 200, 40):
        case(f"dataset.json: {what}", data, files)
    for what, data in json_text_variants(text):
        case(f"dataset.json: {what}", data, files)
    outside = b.root.parent / "_seeds" / "outside.nii.gz"
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_bytes(files["imagesTr/spleen_2.nii.gz"])
    entries = {"../../../_seeds/outside.nii.gz": "an image outside the task folder", "/etc/passwd": "/etc/passwd as image",
               "./imagesTr": "a folder as image", "./imagesTr/missing.nii.gz": "a missing image",
               "./labelsTr/spleen_2.nii.gz": "the label as image", "": "an empty image path",
               "./imagesTr/spleen_2.nii.gz\x00.png": "a NUL in the path", "x" * 5000: "a 5000-character path"}
    for path, what in entries.items():
        p = copy.deepcopy(props)
        p["training"][0]["image"] = path
        case(what, p, files)
        p = copy.deepcopy(props)
        p["training"][0]["label"] = path
        case(what.replace("image", "label"), p, files)
    small = gz(_mutated_header(dict((n, r) for n, r, _ in _nifti_seeds())["chest_ct_labels.nii.gz"],
                               [("dim[1]", 12)]) or b"")
    for what, fs in (("a label on another grid", {**files, "labelsTr/spleen_2.nii.gz": small}),
                     ("a float image as label", {**files, "labelsTr/spleen_2.nii.gz": files["imagesTr/spleen_2.nii.gz"]}),
                     ("an empty image file", {**files, "imagesTr/spleen_2.nii.gz": b""}),
                     ("a PNG as image", {**files, "imagesTr/spleen_2.nii.gz": b"\x89PNG\r\n\x1a\n" + bytes(100)}),
                     ("no image files", {})):
        case(what, props, fs)
    raw = dict((n, r) for n, r, _ in _nifti_seeds())["chest_ct.nii.gz"]
    from fuzz_images import _field_mutations

    muts = _field_mutations()
    for fld, value in rng.sample(muts, 30):
        out = _mutated_header(raw, [(fld, value)])
        if out is not None:
            case(f"image header {fld} = {value!r}", props, {**files, "imagesTr/spleen_2.nii.gz": gz(out)})
    for opts in ({"case": 99}, {"case": -1}, {"case": "nope"}, {"case": "spleen_3"}, {"section": "validation"},
                 {"section": "test"}, {"case": 0, "section": "test"}, {"case": True}, {"case": 1.5}, {"section": 5}):
        case(f"read with {opts}", props, files, options=opts)
    for ending in ("", ".", "/", "../", ".nii.gz\x00", "*"):
        case(f"nnU-Net file_ending {ending!r}", {**v2, "file_ending": ending}, v2_files)
    for what, target in (("dataset.json a link to /dev/zero", "/dev/zero"), ("dataset.json a link to a missing file", "nope.json")):
        d = b.folder()
        task = _task(d, props, files)
        (task / "dataset.json").unlink()
        (task / "dataset.json").symlink_to(target)
        b.add(what, task, d, names=[task.name])
    d = b.folder()
    task = _task(d, props, files)
    (task / "dataset.json").unlink()
    os.mkfifo(task / "dataset.json")
    b.add("dataset.json a FIFO", task, d, names=[task.name])
    d = b.folder()
    task = _task(d, props, files)
    sparse_file(task / "dataset.json", (64 << 20) + 1, b"{")
    b.add("dataset.json of 64 MiB (sparse)", task, d, names=[task.name])
    return b.cases


# ------------------------------------------------------------------------------ cards
YAML_TRAPS = [
    ("an alias bomb", "a: &a ['x','x','x','x','x','x','x','x','x']\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
     "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
     "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"),
    ("deep nesting", "name: " + "[" * 20000 + "]" * 20000 + "\n"),
    ("deep block nesting", "".join(" " * i + f"k{i}:\n" for i in range(3000)) + " " * 3000 + "v: 1\n"),
    ("two documents", "name: a\n---\nname: b\n"),
    ("a python tag", "name: !!python/object/apply:os.system ['echo hi']\n"),
    ("a binary tag", "name: !!binary aGVsbG8=\n"),
    ("a set", "name: !!set {a, b}\n"),
    ("a complex key", "? [1, 2]\n: x\n"),
    ("a date as name", "name: 2020-01-01\n"),
    ("tabs for indentation", "input:\n\tchannels: [ct]\n"),
    ("a list", "- name\n- task\n"), ("a scalar", "just text\n"), ("null", "null\n"), ("empty", ""),
    ("comments only", "# nothing\n"), ("a NUL character", "name: a\x00b\n"),
    ("a lone surrogate", "name: \"\\ud800\"\n"),
    ("an integer key", "1: x\nname: a\n"), ("a null key", "~: x\nname: a\n"), ("a boolean key", "true: x\nname: a\n"),
]
NUMBER_TRAPS = [".nan", ".inf", "-.inf", "1e999", "0x10", "1_000", "0o17", "-0.0", "12:30:00", "~", "'3'"]


def _card_numbers(text: str) -> list[tuple[str, str]]:
    """Lines with a number, each changed to a YAML number trap."""
    import re

    out = []
    for m in re.finditer(r"(?m)^(\s*[a-z_]+:\s*)(-?\d+(\.\d+)?)\s*$", text):
        out.append((m.group(0).strip(), m.group(1)))
    return out


def card_cases(root: Path) -> list[Case]:
    """Model cards (``load_card``, ``find_card`` of a path or of a name), about 340."""
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's: ten times faster
    b = Builder(root, "card", seed=8)
    rng = b.rng
    seeds = sorted(CARDS.glob("*.yaml"))
    entries = ("load_card", "load_card", "find_card")

    def case(what: str, name: str, data: bytes, **kw: Any) -> None:
        b.file_case(what, name, data, entry=entries[len(b.cases) % 3], **kw)

    for seed in seeds:
        text = seed.read_text()
        doc = yaml.safe_load(text)
        for what, new in structure_variants(rng, doc, 12):
            case(f"{seed.name}: {what}", seed.name, yaml.dump(new, Dumper=dumper, sort_keys=False, allow_unicode=True).encode())
        for what, data in byte_variants(rng, text.encode(), 400, 6):
            case(f"{seed.name}: {what}", seed.name, data)
        lines = _card_numbers(text)
        for line, head in rng.sample(lines, min(3, len(lines))):
            trap = rng.choice(NUMBER_TRAPS)
            case(f"{seed.name}: '{line}' -> '{head.strip()} {trap}'", seed.name, text.replace(line, head.strip() + " " + trap, 1).encode())
    base = seeds[0].read_text()
    for what, trap in YAML_TRAPS:
        case(f"YAML trap: {what}", "trap.yaml", trap.encode())
        case(f"YAML trap appended: {what}", "trap.yaml", (base + "\n" + trap).encode())
    for what, data in (("UTF-16", base.encode("utf-16")), ("UTF-8 BOM", b"\xef\xbb\xbf" + base.encode()),
                       ("2 MiB of comments", base.encode() + b"# " + b"x" * (2 << 20) + b"\n"),
                       ("gzipped", gz(base.encode()))):
        case(f"{seeds[0].name}: {what}", seeds[0].name, data)
    d = b.folder()
    sparse_file(d / "big.yaml", 64 << 20, b"name: big\n")
    b.add("a 64 MiB card (sparse)", d / "big.yaml", d, entry="load_card")
    for i, seed in enumerate(seeds[:6]):  # a user card found by name, from the case's own cache
        d = b.folder()
        cards = d / "cache" / "cards"
        cards.mkdir(parents=True)
        doc = yaml.safe_load(seed.read_text())
        what, new = structure_variants(rng, doc, 1)[0]
        if isinstance(new, dict):
            new["name"] = f"fuzz-user-{i}"
        (cards / f"fuzz-user-{i}.yaml").write_text(yaml.dump(new, Dumper=dumper, sort_keys=False))
        b.add(f"user card {seed.name}: {what}", cards / f"fuzz-user-{i}.yaml", d, entry="find_card",
              names=[f"fuzz-user-{i}"], options={"name": f"fuzz-user-{i}"}, cache=str(d / "cache"))
    link_cases(b, "linked.yaml", seeds[0], entry="load_card")
    return b.cases
