"""tests/image/heavy runs only in `make image-check` (QSCALE_IMAGE_HEAVY=1): builds that
fetch from a package index inside `docker build`, several minutes each on this machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if os.environ.get("QSCALE_IMAGE_HEAVY") != "1" and collection_path.name.startswith("test_"):
        return True
    return None
