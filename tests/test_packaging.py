"""What ``pip install`` puts into site-packages: every vesselcli package and nothing else.

The selection is read from ``pyproject.toml`` and applied the way setuptools' ``packages.find``
applies it (each folder with an ``__init__.py``, named with dots, kept when it matches an
``include`` glob and no ``exclude`` glob), so the check needs no build. Measured on a real
build too: see README, "Packaging".
"""
from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def installed_packages() -> set[str]:
    setuptools = _pyproject()["tool"]["setuptools"]
    packages = setuptools.get("packages", {})
    if isinstance(packages, list):  # an explicit list is installed as written
        return set(packages)
    find = packages["find"]
    include, exclude = find.get("include", ["*"]), find.get("exclude", [])
    return {name for name in _packages_under(ROOT, "") if any(fnmatch.fnmatchcase(name, g) for g in include)
            and not any(fnmatch.fnmatchcase(name, g) for g in exclude)}


def _packages_under(folder: Path, prefix: str) -> list[str]:
    """Dotted names of the packages below ``folder``, descending only into packages (as setuptools does)."""
    names = []
    for child in sorted(folder.iterdir()):
        if child.is_dir() and "." not in child.name and (child / "__init__.py").is_file():
            names.append(prefix + child.name)
            names += _packages_under(child, prefix + child.name + ".")
    return names


def test_the_wheel_holds_every_vesselcli_package_and_no_top_level_train() -> None:
    packages = installed_packages()
    vesselcli = {"vesselcli", *_packages_under(ROOT / "vesselcli", "vesselcli.")}
    assert packages == vesselcli  # sub-packages added later are installed without editing a list
    assert (ROOT / "train" / "__init__.py").is_file() and "train" not in packages  # `python -m train` from a checkout only


def test_the_license_is_an_spdx_string_with_a_setuptools_that_reads_it() -> None:
    config = _pyproject()
    assert isinstance(config["project"]["license"], str)  # the table form prints deprecation screens
    (setuptools,) = [r for r in config["build-system"]["requires"] if r.startswith("setuptools")]
    assert int(re.search(r">=\s*(\d+)", setuptools).group(1)) >= 77  # PEP 639 strings: setuptools 77+
