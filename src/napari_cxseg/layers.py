"""Conversion between the engine's types and napari layer-data tuples (no napari import).

Layer metadata carries the engine objects under ``metadata["cxseg"]``:
``{"geometry": Geometry, "source_path": str, "classes": {id: LabelClass}, "modality": str}``
so writers and widgets can recover the exact source geometry and class names.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .geometry import Geometry
from .images import Image, LabelClass, LabelMap

META_KEY = "cxseg"
LayerData = tuple[Any, dict[str, Any], str]


def label_colormap_dict(label_map: LabelMap) -> dict:
    """napari ``DirectLabelColormap``-compatible ``{label: colour}`` dict."""
    cmap: dict = {None: "#ff00ff", 0: "transparent"}
    for k in label_map.classes:
        cmap[int(k)] = label_map.colour_of(k)
    return cmap


def label_features(classes: dict[int, LabelClass]) -> dict[str, list]:
    """Features table (``index`` + ``name``) that makes napari show class names."""
    ids = [0, *sorted(classes)]
    return {"index": ids, "name": ["background", *(classes[k].name for k in ids[1:])]}


def image_layer_data(image: Image, name: str | None = None) -> LayerData:
    """Layer-data tuple for an :class:`Image` (channels become separate layers)."""
    kw = image.geometry.layer_kwargs()
    meta = {
        META_KEY: {
            "geometry": image.geometry,
            "modality": image.modality,
            "source_path": image.meta.get("source_path"),
            "channel_names": image.channel_names,
        },
        **{k: v for k, v in image.meta.items() if k != "source_path"},
    }
    kw["metadata"] = meta
    base = name or image.meta.get("name") or "image"
    window = image.meta.get("window")
    if image.channel_names:
        kw["channel_axis"] = 0
        kw["name"] = [f"{base} [{c}]" for c in image.channel_names]
        kw["blending"] = ["translucent_no_depth"] + ["additive"] * (len(image.channel_names) - 1)
        kw["colormap"] = "gray"
    else:
        kw["name"] = base
        kw["colormap"] = "gray"
        if window is not None:
            kw["contrast_limits"] = [float(window[0]), float(window[1])]
    return image.array, kw, "image"


def labels_layer_data(label_map: LabelMap, name: str | None = None) -> LayerData:
    """Layer-data tuple for a :class:`LabelMap` with named, coloured classes."""
    kw = label_map.geometry.layer_kwargs()
    kw["name"] = name or label_map.meta.get("name") or "labels"
    kw["colormap"] = label_colormap_dict(label_map)
    kw["features"] = label_features(label_map.classes)
    kw["metadata"] = {
        META_KEY: {
            "geometry": label_map.geometry,
            "classes": dict(label_map.classes),
            "source_path": label_map.meta.get("source_path"),
            "reference_image_path": label_map.meta.get("reference_image_path"),
        }
    }
    kw["opacity"] = 0.5
    arr = label_map.array
    if not arr.flags.writeable:  # e.g. arrays decoded by PIL: napari must be able to paint
        arr = np.array(arr, copy=True)
    return arr, kw, "labels"


def geometry_from_layer_meta(meta: dict[str, Any], ndim: int) -> Geometry:
    """The geometry of a layer, from its cxseg metadata or else from its napari transform.

    ``meta`` is the dict napari gives writers (``metadata``, ``scale``, ``translate``,
    ``rotate``, ``affine`` ...) or :func:`layer_state` of a live layer.
    """
    md = (meta.get("metadata") or {}).get(META_KEY) or {}
    geom = md.get("geometry")
    if isinstance(geom, dict):
        geom = Geometry.from_dict(geom)
    if isinstance(geom, Geometry) and geom.ndim == ndim:
        return geom
    affine = meta.get("affine")
    if affine is not None and hasattr(affine, "affine_matrix"):
        affine = affine.affine_matrix
    frame = "image" if ndim == 2 else "LPS"
    return Geometry.from_layer_transform(
        ndim,
        scale=meta.get("scale"),
        translate=meta.get("translate"),
        rotate=meta.get("rotate"),
        affine=affine,
        frame=frame,
    )


def classes_from_layer_meta(meta: dict[str, Any]) -> dict[int, LabelClass]:
    """Class names and colours of a Labels layer (metadata, then features + colormap)."""
    md = (meta.get("metadata") or {}).get(META_KEY) or {}
    classes: dict[int, LabelClass] = {}
    feats = meta.get("features")
    if feats is not None and len(feats) and "index" in feats and "name" in feats:
        idx = list(np.asarray(feats["index"]))
        names = list(np.asarray(feats["name"]))
        classes = {int(i): LabelClass(str(n)) for i, n in zip(idx, names, strict=False) if int(i) != 0}
    elif md.get("classes"):
        classes = {int(k): (v if isinstance(v, LabelClass) else LabelClass(str(v))) for k, v in md["classes"].items()}
    colours = _colormap_colours(meta.get("colormap"))
    old = md.get("classes") or {}
    for k, c in classes.items():
        if k in colours:
            c.colour = colours[k]
        elif k in old and getattr(old[k], "colour", None):
            c.colour = old[k].colour
    return classes


def _colormap_colours(cmap: Any) -> dict[int, str]:
    """``{label: '#rrggbb'}`` from a napari colormap, a dict, or nothing."""
    if cmap is None:
        return {}
    cd = getattr(cmap, "color_dict", None)
    if cd is None and isinstance(cmap, dict):
        cd = cmap.get("color_dict", cmap)
    if not isinstance(cd, dict):
        return {}
    out = {}
    for k, v in cd.items():
        if k is None or int(k) == 0:
            continue
        rgba = np.asarray(v, float).ravel() if not isinstance(v, str) else None
        if rgba is None:
            out[int(k)] = v
        elif rgba.size >= 3:
            out[int(k)] = "#" + "".join(f"{int(round(c * 255)):02x}" for c in rgba[:3])
    return out


def layer_to_label_map(data: np.ndarray, meta: dict[str, Any]) -> LabelMap:
    """A :class:`LabelMap` from a Labels layer's data and writer/state metadata."""
    arr = np.asarray(data)
    geom = geometry_from_layer_meta(meta, arr.ndim)
    md = (meta.get("metadata") or {}).get(META_KEY) or {}
    return LabelMap(
        array=arr,
        geometry=geom,
        classes=classes_from_layer_meta(meta),
        meta={
            "source_path": md.get("source_path"),
            "reference_image_path": md.get("reference_image_path"),
            "name": meta.get("name"),
            # the autosaver's key for this layer (editing.recovery.label_map_key)
            "recovery_key": (md.get("recovery") or {}).get("key"),
        },
    )


def layer_state(layer: Any) -> dict[str, Any]:
    """The writer-style metadata dict of a live napari layer (duck-typed, no import)."""
    state = {
        "name": layer.name,
        "metadata": layer.metadata,
        "scale": np.asarray(layer.scale),
        "translate": np.asarray(layer.translate),
        "rotate": np.asarray(layer.rotate),
        "affine": np.asarray(layer.affine.affine_matrix),
    }
    if hasattr(layer, "features"):
        state["features"] = layer.features
    if hasattr(layer, "colormap"):
        state["colormap"] = layer.colormap
    return state


def layer_to_image(data: np.ndarray, meta: dict[str, Any]) -> Image:
    """An :class:`Image` from an Image layer's data and state (geometry and modality kept)."""
    arr = np.asarray(data)
    md = (meta.get("metadata") or {}).get(META_KEY) or {}
    geom = md.get("geometry")
    ndim = geom.ndim if isinstance(geom, Geometry) else arr.ndim
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and not isinstance(geom, Geometry):
        # an RGB(A) photo or screenshot of a radiograph: grey by luminance
        arr = arr[..., :3] @ np.array([0.299, 0.587, 0.114])
        ndim = 2
    geom = geometry_from_layer_meta(meta, ndim)
    modality = md.get("modality") or ("XR" if ndim == 2 else "")
    return Image(
        array=arr,
        geometry=geom,
        modality=modality,
        meta={"source_path": md.get("source_path"), "name": meta.get("name")},
    )


# ---------------------------------------------------------------------- world grids


def layer_grid_shape(layer: Any) -> tuple[int, ...]:
    """The spatial shape of a layer's data (an RGB(A) image's colour axis left out)."""
    shape = tuple(int(n) for n in np.shape(layer.data))
    if getattr(layer, "rgb", False):
        shape = shape[:-1]
    return shape[-int(layer.ndim) :] if len(shape) > int(layer.ndim) else shape


def layer_world_affine(layer: Any) -> np.ndarray:
    """``(n+1, n+1)`` matrix taking a layer's data indices to napari world coordinates.

    Built from the layer's public ``data_to_world`` (scale, translate, rotate, shear and
    affine all included), so two layers whose transforms are written differently but place
    their voxels at the same places get the same matrix.
    """
    n = int(layer.ndim)
    origin = np.asarray(layer.data_to_world(np.zeros(n)), float)[-n:]
    m = np.eye(n + 1)
    m[:n, n] = origin
    for i in range(n):
        unit = np.zeros(n)
        unit[i] = 1.0
        m[:n, i] = np.asarray(layer.data_to_world(unit), float)[-n:] - origin
    return m


def _fmt(values: Any) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in np.ravel(values)) + ")"


def grid_differences(
    shape_a: tuple[int, ...],
    affine_a: np.ndarray,
    shape_b: tuple[int, ...],
    affine_b: np.ndarray,
    tolerance: float = 0.01,
) -> list[str]:
    """What differs between two voxel grids (empty when they are one grid).

    Parameters
    ----------
    shape_a, shape_b
        Spatial shapes of the two arrays.
    affine_a, affine_b
        ``(n+1, n+1)`` index -> world matrices (:func:`layer_world_affine`, ``Geometry.affine``).
    tolerance
        Largest allowed displacement of any grid corner, as a fraction of the smallest voxel.

    Returns
    -------
    list of str
        Human-readable differences (``"shape (4, 5) vs (4, 6)"``, ``"voxel size ..."``,
        ``"orientation ..."``, ``"origin ..."``).
    """
    shape_a, shape_b = tuple(int(s) for s in shape_a), tuple(int(s) for s in shape_b)
    if len(shape_a) != len(shape_b):
        return [f"{len(shape_a)}D vs {len(shape_b)}D"]
    n = len(shape_a)
    a, b = np.asarray(affine_a, float), np.asarray(affine_b, float)
    if a.shape != (n + 1, n + 1) or b.shape != (n + 1, n + 1):
        return [f"transforms of {a.shape} and {b.shape} for {n}D grids"]
    out = []
    if shape_a != shape_b:
        out.append(f"shape {shape_a} vs {shape_b}")
    sa, sb = np.linalg.norm(a[:n, :n], axis=0), np.linalg.norm(b[:n, :n], axis=0)
    voxel = float(min(sa.min(initial=np.inf), sb.min(initial=np.inf)))
    if not np.isfinite(voxel) or voxel <= 0:
        return [*out, "a degenerate transform (zero voxel size)"]
    tol = tolerance * voxel
    corners = np.array(np.meshgrid(*[[0, max(s - 1, 0)] for s in shape_a], indexing="ij"))
    corners = np.vstack([corners.reshape(n, -1), np.ones((1, 2**n))])
    moved = float(np.abs((a - b) @ corners)[:n].max()) if n else 0.0
    if moved <= tol:
        return out
    before = len(out)
    if np.abs(sa - sb).max() > tol / max(max(shape_a, default=1), 1):
        out.append(f"voxel size {_fmt(sa)} vs {_fmt(sb)}")
    if np.abs(a[:n, :n] / sa - b[:n, :n] / sb).max() > 1e-4:
        out.append("orientation (rotate / shear / affine) differs")
    if np.abs(a[:n, n] - b[:n, n]).max() > tol:
        out.append(f"origin {_fmt(a[:n, n])} vs {_fmt(b[:n, n])}")
    if len(out) == before:
        out.append(f"voxels placed up to {moved:.3g} apart")
    return out
