"""What `scripts/install` puts into /opt/hub-sidecars: every package of the tree (a service, or
a subpackage such as backup/actions/), or the installed command fails to import it."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_package_of_the_services_is_in_the_distribution():
    shipped = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
                  ["packages"])  # fmt: skip
    tops = ("hubsidecars", "restuser", "culler", "stats", "backup")
    found = {".".join(init.parent.relative_to(REPO).parts)
             for top in tops for init in (REPO / top).rglob("__init__.py")
             if "__pycache__" not in init.parts}  # fmt: skip
    assert found - shipped == set(), "not shipped: add them to [tool.setuptools] packages"
