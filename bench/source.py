"""Freeze the code under test for one run.

Other people edit the source tree while a benchmark runs; a qsub started a minute
later than the dispatcher may then speak a different protocol. So by default the
harness copies the packages (as pyproject's package-dir maps them) into a temporary
directory, puts it first on PYTHONPATH for itself and every process it starts, and
works from there: the whole run measures one version.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def package_dirs() -> dict[str, Path]:
    """Dotted package name -> source directory, from pyproject.toml."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    mapping = data.get("tool", {}).get("setuptools", {}).get("package-dir", {"pkbs": "pkbs"})
    return {name: REPO / path for name, path in mapping.items()}


def freeze() -> tuple[Path, dict[str, Any]]:
    """Copy the packages to <tmp>/pkbs/... ; returns (site dir, facts about the copy)."""
    site = Path(tempfile.mkdtemp(prefix="pkbs-bench-src-"))
    digest = hashlib.sha256()
    files = 0
    for name, src in sorted(package_dirs().items()):
        dest = site.joinpath(*name.split("."))
        dest.mkdir(parents=True, exist_ok=True)
        for path in sorted(src.iterdir()):
            if path.is_file() and path.suffix in (".py", ".typed", ".json", ".txt"):
                shutil.copy2(path, dest / path.name)
                digest.update(f"{name}/{path.name}\0".encode())
                digest.update(path.read_bytes())
                files += 1
    return site, {"snapshot": str(site), "files": files, "sha256": digest.hexdigest()[:16]}


def activate(site: Path) -> None:
    """Use the copy here and in every child: first on sys.path and PYTHONPATH, and a
    working directory outside the source tree (python -m puts the cwd first)."""
    sys.path.insert(0, str(site))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(site) + (os.pathsep + old if old else "")
    os.chdir(site)
    for module in [m for m in sys.modules if m == "pkbs" or m.startswith("pkbs.")]:
        del sys.modules[module]
