"""napari-cxseg: MONAI segmentation of chest X-rays and MSD-style volumes in napari.

The core (``io``, ``geometry``, ``models``, ``inference``, ``editing``, ``training``) imports
neither Qt nor napari; ``widgets``, ``_reader``, ``_writer`` and ``_sample_data`` are the napari face
and ``cli`` the command-line face.
"""

__version__ = "0.1.0"
