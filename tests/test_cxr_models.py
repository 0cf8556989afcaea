"""The shipped chest X-ray models on real films the tests ship (tests/data/kermany_cxr, CC BY 4.0).

The films are paediatric AP radiographs from a data set no shipped model was trained on (the models
saw adult PA films of JSRT and Shenzhen), without masks: the checks are what a user would look for
first. Both lungs are found, each as one part of a plausible size, inside the film, with the
patient's right lung on the image's left; the heart (anatomy model) lies between the lungs, and a
film stored mirrored (PatientOrientation R\\F) gives the same lungs on the same anatomy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from napari_cxseg.io import read
from napari_cxseg.models.cards import find_card

FILMS = sorted((Path(__file__).parent / "data" / "kermany_cxr").glob("*.png"))


@pytest.fixture(scope="module")
def lungs():
    from napari_cxseg.inference import Predictor

    return Predictor(find_card("cxr-lungs"), device="cpu")


def centre_col(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[1].mean())


@pytest.mark.parametrize("film", FILMS, ids=[f.stem for f in FILMS])
def test_cxr_lungs_on_real_films_sides_and_shape(lungs, film):
    image = read(film)[0]
    lab = lungs.predict(image).array
    h, w = lab.shape
    right, left = lab == 1, lab == 2
    for m in (right, left):
        assert ndimage.label(m)[1] == 1  # one part each
        assert 0.03 < m.mean() < 0.3  # a lung field, not a speck or the whole film
        rows = np.nonzero(m)[0]
        assert rows.min() > 0.02 * h and rows.max() < 0.98 * h  # inside the film
    assert centre_col(right) < w / 2 < centre_col(left)  # patient's right on the image's left
    # the two lungs are side by side, at about the same height
    assert abs(np.nonzero(right)[0].mean() - np.nonzero(left)[0].mean()) < 0.15 * h


def test_a_mirrored_dicom_film_gives_the_lungs_by_anatomy(lungs, tmp_path):
    """The same pixels stored mirrored with PatientOrientation R\\F: the display is flipped back,
    the right lung is still the patient's right, and the saved labels lie on the stored grid."""
    from PIL import Image as PILImage

    from dicom_factory import write_radiograph
    from napari_cxseg import io

    pix = np.asarray(PILImage.open(FILMS[0]), np.uint16)
    std = write_radiograph(tmp_path / "std.dcm", pix, bits_stored=8)
    mir = write_radiograph(tmp_path / "mir.dcm", pix[:, ::-1].copy(), bits_stored=8, patient_orientation="R\\F")
    a = lungs.predict(read(std)[0]).array
    image_m = read(mir)[0]
    b = lungs.predict(image_m)
    assert np.array_equal(a, b.array)
    io.write_labels(b, tmp_path / "mir_lungs.png")
    stored = np.asarray(PILImage.open(tmp_path / "mir_lungs.png"))
    assert np.array_equal(stored, a[:, ::-1])  # on the file's own (mirrored) pixel grid


def test_cxr_anatomy_demo_heart_between_the_lungs():
    from napari_cxseg.inference import Predictor

    card = find_card("cxr-anatomy-demo")
    pred = Predictor(card, device="cpu")
    names = {c.name: k for k, c in card.classes.items()}
    for film in FILMS[:2]:
        lab = pred.predict(read(film)[0]).array
        heart, right, left = lab == names["heart"], lab == names["right lung"], lab == names["left lung"]
        assert heart.any() and right.any() and left.any()
        assert centre_col(right) < centre_col(heart) < centre_col(left)
