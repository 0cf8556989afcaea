"""Medical Segmentation Decathlon task folders (``TaskNN_Name/dataset.json``).

Tolerates the known quirks: Task04's ``"relase"`` key, ``"test"`` given as plain path strings,
4D multi-channel images, macOS ``._*`` files, and the nnU-Net v2 form (``channel_names``,
``labels`` as name -> id, ``file_ending``, per-channel ``_0000`` files, no case lists).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..images import CxsegError, Image, LabelClass, LabelMap
from .label_values import default_classes
from .nifti import read_nifti

_MR_WORDS = ("MR", "MRI", "T1", "T1W", "T1GD", "T2", "T2W", "FLAIR", "ADC", "DWI", "PD", "T1C")


def modality_of(channel_names: list[str]) -> str:
    """The modality of an MSD task from its channel names.

    Parameters
    ----------
    channel_names
        ``modality`` values of ``dataset.json`` (``"FLAIR"``, ``"CT"``, ``"T2"`` ...).

    Returns
    -------
    str
        ``"CT"``, ``"MR"`` or ``""``.
    """
    words = {w for n in channel_names for w in re.split(r"[^A-Z0-9]+", str(n).upper()) if w}
    if "CT" in words:
        return "CT"
    if words & set(_MR_WORDS):
        return "MR"
    return ""


def _by_index(d: Any) -> list[str]:
    """``{"0": "FLAIR", "1": "T1w"}`` -> ``["FLAIR", "T1w"]`` (in index order)."""
    if isinstance(d, list):
        return [str(v) for v in d]
    if not isinstance(d, dict):
        return []
    try:
        return [str(d[k]) for k in sorted(d, key=lambda k: int(k))]
    except (TypeError, ValueError):
        return [str(v) for v in d.values()]


def _classes(labels: Any) -> dict[int, LabelClass]:
    """Classes from ``{"1": "edema"}`` (MSD) or ``{"edema": 1}`` (nnU-Net v2; region lists skipped)."""
    out: dict[int, LabelClass] = {}
    if not isinstance(labels, dict):
        return out
    for k, v in labels.items():
        try:
            if isinstance(v, str):
                cid, name = int(k), v
            elif isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer():
                cid, name = int(v), str(k)
            else:
                continue
        except (TypeError, ValueError):
            continue
        if cid != 0:
            out[cid] = LabelClass(name)
    return out


def _is_path(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip()) and "\x00" not in value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _case_name(path: str | list[str]) -> str:
    p = Path(path[0] if isinstance(path, list) else path).name
    for suffix in (".nii.gz", ".nii", ".mha", ".nrrd"):
        if p.lower().endswith(suffix):
            p = p[: -len(suffix)]
            break
    return p


class MSDTask:
    """One MSD (or nnU-Net) task folder.

    Parameters
    ----------
    path
        The task folder or its ``dataset.json``.

    Attributes
    ----------
    root : Path
        The task folder.
    properties : dict
        The parsed ``dataset.json``.
    name, description, release, tensor_image_size : str
        Task facts (``release`` also read from Task04's ``"relase"``).
    channel_names : list of str
        From ``modality`` (MSD) or ``channel_names`` (nnU-Net v2).
    classes : dict
        ``{id: LabelClass}`` from ``labels``, background left out.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        p = Path(path)
        json_path = p / "dataset.json" if p.is_dir() else p
        if not json_path.is_file():
            raise CxsegError(f"{p} is not an MSD task: no dataset.json in it")
        from .documents import load_json
        from .limits import MAX_DATASET_JSON_BYTES

        props = load_json(json_path, MAX_DATASET_JSON_BYTES, "an MSD dataset.json")
        if not isinstance(props, dict):
            raise CxsegError(f"cannot read {json_path}: it is not a JSON object")
        self.json_path = json_path
        self.root = json_path.parent
        self.properties: dict[str, Any] = props
        self.name = str(props.get("name") or self.root.name)
        self.description = str(props.get("description", ""))
        self.release = str(props.get("release") or props.get("relase") or "")
        self.tensor_image_size = str(props.get("tensorImageSize", ""))
        self.channel_names = _by_index(props.get("modality") or props.get("channel_names") or {})
        self.classes = _classes(props.get("labels"))
        self.file_ending = str(props.get("file_ending", ".nii.gz"))

    def __repr__(self) -> str:
        return f"MSDTask({str(self.root)!r}, name={self.name!r})"

    @property
    def modality(self) -> str:
        """``"CT"``, ``"MR"`` or ``""`` guessed from the channel names."""
        return modality_of(self.channel_names)

    @property
    def sections(self) -> list[str]:
        """Case lists this task has (``training``, ``test``, ``validation`` ...)."""
        listed = [k for k in ("training", "validation", "test") if isinstance(self.properties.get(k), list)]
        if "training" not in listed and (self.root / "imagesTr").is_dir():
            listed.insert(0, "training")
        if "test" not in listed and (self.root / "imagesTs").is_dir():
            listed.append("test")
        return listed

    # ------------------------------------------------------------------ cases
    def cases(self, section: str = "training") -> list[dict[str, Any]]:
        """The cases of one section.

        Parameters
        ----------
        section
            ``"training"`` (default), ``"test"`` or another list key of ``dataset.json``.

        Returns
        -------
        list of dict
            ``{"name", "image", "label"}``: absolute paths (``image`` is a list for per-channel
            files), ``label`` is ``None`` for test cases.

        Raises
        ------
        CxsegError
            When the section does not exist (names ``dataset.json`` and the sections there are).
        """
        items = self.properties.get(section)
        if isinstance(items, list):
            if not items:
                return []
            from monai.data import load_decathlon_datalist

            try:
                data = load_decathlon_datalist(
                    self.json_path,
                    is_segmentation=section != "test",
                    data_list_key=section,
                    base_dir=self.root,
                )
            except (TypeError, ValueError, KeyError) as e:
                raise CxsegError(f"cannot read the {section!r} list of {self.json_path}: {e}") from e
        elif section in ("training", "test"):
            data = self._scan(section)
        else:
            raise CxsegError(
                f"{self.json_path} has no {section!r} cases; it has: {', '.join(self.sections) or 'none'}"
            )
        out = []
        for k, item in enumerate(data):
            image = item.get("image") if isinstance(item, dict) else item
            if image is None:
                continue
            label = item.get("label") if isinstance(item, dict) else None
            many = isinstance(image, list | tuple)
            if not (all(_is_path(i) for i in image) and image if many else _is_path(image)):
                raise CxsegError(f"{self.json_path}: case {k} of {section!r}: 'image' must be a file path "
                                 f"or a list of file paths (got {_show(image)})")
            if label is not None and not _is_path(label):
                raise CxsegError(f"{self.json_path}: case {k} of {section!r}: 'label' must be a file path "
                                 f"(got {_show(label)})")
            image = [str(i) for i in image] if many else str(image)
            name = str(item["name"]) if isinstance(item, dict) and isinstance(item.get("name"), str) else _case_name(image)
            out.append({"name": name, "image": image, "label": None if label is None else str(label)})
        return out

    def _scan(self, section: str) -> list[dict[str, Any]]:
        """nnU-Net v2 layout: ``imagesTr/<case>_0000<ending>`` per channel, ``labelsTr/<case><ending>``."""
        images = self.root / ("imagesTr" if section == "training" else "imagesTs")
        labels = self.root / "labelsTr"
        ending = self.file_ending
        if not images.is_dir():
            return []
        groups: dict[str, list[str]] = {}
        for f in sorted(images.iterdir()):
            n = f.name
            if n.startswith(".") or not n.endswith(ending):
                continue
            stem = n[: -len(ending)]
            m = re.match(r"^(.*)_(\d{4})$", stem)
            case = m.group(1) if m else stem
            groups.setdefault(case, []).append(str(f))
        out = []
        for case, files in groups.items():
            item: dict[str, Any] = {"name": case, "image": files if len(files) > 1 else files[0]}
            lab = labels / f"{case}{ending}"
            if section == "training" and lab.is_file():
                item["label"] = str(lab)
            out.append(item)
        return out

    def _find(self, case: int | str, section: str | None) -> tuple[dict[str, Any], str]:
        sections = [section] if section else [s for s in ("training", "test") if s in self.sections]
        if isinstance(case, int | np.integer) and not isinstance(case, bool):
            sec = sections[0] if sections else "training"
            cs = self.cases(sec)
            if not -len(cs) <= int(case) < len(cs):
                raise CxsegError(f"{self.json_path}: no case {case} in {sec!r} ({len(cs)} cases)")
            return cs[int(case)], sec
        key = str(case)
        for sec in sections:
            for c in self.cases(sec):
                files = c["image"] if isinstance(c["image"], list) else [c["image"]]
                if key in (c["name"], *files, *(Path(f).name for f in files)):
                    return c, sec
        raise CxsegError(f"{self.json_path}: no case named {key!r}")

    # ------------------------------------------------------------------ reading
    def read_case(
        self, case: int | str = 0, section: str | None = None
    ) -> tuple[Image, LabelMap | None]:
        """Read one case's image and label map.

        Parameters
        ----------
        case
            Index in the section, or the case name (``"BRATS_001"``) or image file name.
        section
            ``"training"`` or ``"test"``; by default the training list (names are also looked for
            in the test list).

        Returns
        -------
        (Image, LabelMap or None)
            The image with channel names from ``modality`` and the label map with class names
            from ``labels`` (``None`` for test cases).

        Raises
        ------
        CxsegError
            Unknown case, unreadable file, or a label grid that differs from the image grid
            (names both files).
        """
        item, sec = self._find(case, section)
        try:
            return self._read_case(item, sec)
        except CxsegError as e:  # a case file outside the task folder: name the task too
            if str(self.root) in str(e):
                raise
            raise CxsegError(f"{self.json_path}: case {item['name']!r}: {e}") from e

    def _read_case(self, item: dict[str, Any], sec: str) -> tuple[Image, LabelMap | None]:
        image = self._read_image(item["image"])
        name = item["name"]
        image.meta["name"] = name
        image.meta["msd"] = {"task": self.name, "case": name, "section": sec, "dataset_json": str(self.json_path)}
        if not item.get("label"):
            return image, None
        image_path = item["image"][0] if isinstance(item["image"], list) else item["image"]
        label_path = item["label"]
        labels = read_nifti(label_path, as_labels=True)
        assert isinstance(labels, LabelMap)
        if not image.geometry.same_grid(labels.geometry, image.spatial_shape, labels.array.shape):
            raise CxsegError(
                f"the label grid of {label_path} (shape {labels.array.shape}, spacing "
                f"{np.round(labels.geometry.spacing, 3).tolist()}) differs from the grid of its image "
                f"{image_path} (shape {image.spatial_shape}, spacing "
                f"{np.round(image.geometry.spacing, 3).tolist()})"
            )
        classes = default_classes(labels.array)
        classes.update({k: LabelClass(v.name, v.colour) for k, v in self.classes.items()})
        labels.classes = classes
        labels.meta["name"] = f"{name} labels"
        labels.meta["reference_image_path"] = str(image_path)
        labels.meta["msd"] = dict(image.meta["msd"])
        return image, labels

    def _read_image(self, image: str | list[str]) -> Image:
        modality = self.modality
        if not isinstance(image, list):
            img = read_nifti(image, as_labels=False, channel_names=self.channel_names or None, modality=modality)
            assert isinstance(img, Image)
            return img
        parts = [read_nifti(f, as_labels=False, modality=modality) for f in image]
        first = parts[0]
        for f, p in zip(image[1:], parts[1:], strict=True):
            assert isinstance(p, Image)
            if p.channel_names or not first.geometry.same_grid(p.geometry, first.spatial_shape, p.spatial_shape):
                raise CxsegError(f"the channel file {f} does not share the grid of {image[0]}")
        n = len(parts)
        names = self.channel_names if len(self.channel_names) == n else [f"c{i}" for i in range(n)]
        first.geometry.source["channel_files"] = list(image)
        return Image(
            array=np.stack([p.array for p in parts]),
            geometry=first.geometry,
            modality=modality,
            channel_names=names,
            meta=first.meta,
        )


def read_msd(
    path: str | os.PathLike, case: int | str | None = None, section: str | None = None
) -> list[Image | LabelMap]:
    """Read one case of an MSD task (used by :func:`napari_cxseg.io.read`).

    Parameters
    ----------
    path
        Task folder or its ``dataset.json``.
    case
        Index or name; by default the first training case (the first test case when the task
        has no training cases).
    section
        ``"training"`` or ``"test"``.

    Returns
    -------
    list
        ``[Image, LabelMap]``, or ``[Image]`` for a test case.
    """
    task = MSDTask(path)
    if case is None:
        case = 0
        if section is None and ("training" not in task.sections or not task.cases("training")):
            section = "test"
    image, labels = task.read_case(case, section)
    return [image] if labels is None else [image, labels]
