"""napari sample-data commands: a chest CT and a chest radiograph, each with reference labels.

The files are bundled in ``napari_cxseg/sample_data`` (see its ``SOURCE.md`` for their origin
and licenses) and read with :func:`napari_cxseg.io.read`, so the layers carry the same geometry
and class names as any opened file.
"""

from __future__ import annotations

from .layers import LayerData
from .sample_data_files import sample_paths


def _load(key: str, image_name: str, labels_name: str) -> list[LayerData]:
    from .images import Image, LabelMap
    from .io import read
    from .layers import image_layer_data, labels_layer_data

    image_path, labels_path = sample_paths(key)
    image = read(image_path)[0]
    labels = read(labels_path, as_labels=True)[0]
    if not isinstance(image, Image) or not isinstance(labels, LabelMap):
        raise TypeError(f"sample {key}: unexpected file contents in {image_path.parent}")
    labels.meta["reference_image_path"] = str(image_path)
    return [image_layer_data(image, name=image_name), labels_layer_data(labels, name=labels_name)]


def sample_ct() -> list[LayerData]:
    """Chest CT (LIDC-IDRI-0001, 2 x 2 x 5 mm) and 13 TotalSegmentator classes.

    Returns
    -------
    list
        ``[CT image layer data, labels layer data]``.
    """
    return _load("chest_ct", "chest CT", "chest CT reference")


def sample_cxr() -> list[LayerData]:
    """PA chest radiograph rendered from the same CT and its lung masks.

    Returns
    -------
    list
        ``[radiograph image layer data, lungs labels layer data]`` (1 right lung, 2 left lung;
        the patient's right is on the image's left).
    """
    return _load("chest_xray", "chest radiograph (DRR)", "lungs reference")
