"""The image `make image` built (dist/image.json), for the tests that need it.

Without it a test is skipped locally, with the command to build it, but fails under CI
(CI=true): `make test` builds the image first, so a missing one there is a broken build.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import REPO_ROOT

IMAGE_JSON = REPO_ROOT / "dist" / "image.json"


def built_image(path: Path = IMAGE_JSON) -> dict[str, Any]:
    """dist/image.json: name, tag, digest, reference, archive (relative to the repository)."""
    if not path.exists():
        message = f"no image: {path.relative_to(REPO_ROOT)} is missing (run `make image`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    info: dict[str, Any] = json.loads(path.read_text())
    if not (REPO_ROOT / info["archive"]).exists():
        pytest.fail(f"dist/image.json names {info['archive']}, which is missing: make image")
    return info
