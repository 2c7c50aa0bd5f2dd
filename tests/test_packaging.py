"""The package as pip builds it: every subpackage is listed in
pyproject.toml (a missing one works in an editable install and is absent
from a wheel)."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_in_the_wheel() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])  # fmt: skip
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "uringlets").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found == listed


def test_every_c_source_and_header_is_in_the_package_data() -> None:
    """The extension is built from these on the installing machine (an sdist
    without one of them fails to compile there)."""
    data = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
               ["package-data"]["uringlets"])  # fmt: skip
    sources = {p.name for p in (ROOT / "uringlets").glob("*.[ch]")}
    assert sources and sources <= data
