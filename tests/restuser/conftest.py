from __future__ import annotations

from pathlib import Path

import pytest

from hubsidecars.config import load_settings
from realparts.restuser import SKEL, UID_MAX, UID_MIN
from restuser import settings as restuser_settings
from restuser.cli import build_store


def store_settings(prefix_root: Path, **overrides) -> restuser_settings.RestuserSettings:
    """Validated settings for a store under `prefix_root`; overrides are parsed like flags."""
    values = {"prefix": str(prefix_root), "skel": str(SKEL), "uid_min": UID_MIN, "uid_max": UID_MAX}
    values.update(overrides)
    settings_class = restuser_settings.RestuserSettings
    settings = load_settings(settings_class, "UNUSED_PREFIX", values, environ={})
    return restuser_settings.resolve(settings)


@pytest.fixture
def make_store(prefix_root: Path):
    def make(**overrides):
        return build_store(store_settings(prefix_root, **overrides))

    return make


@pytest.fixture
def store(make_store):
    return make_store()
