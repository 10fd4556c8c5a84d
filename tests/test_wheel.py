"""The installed wheel carries pkbs.cli / pkbs.worker / pkbs.dispatcher (from the
top-level source folders), the dashboard's assets and working console scripts."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_and_runs(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("pkbs-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("pkbs/cli/qsub.py", "pkbs/worker/service.py", "pkbs/dispatcher/app.py"):
        assert module in names
    # The dashboard's page and assets (dispatcher/uiroutes.py serves them from the package).
    from pkbs.dispatcher.uiroutes import ASSET_TYPES

    for asset in ("index.html", *ASSET_TYPES):
        assert f"pkbs/dispatcher/ui/{asset}" in names, asset
    assert not any(n.startswith(("cli/", "worker/", "dispatcher/", "tests/")) for n in names)

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = subprocess.run(
        [sys.executable, "-c",
         "import pkbs, pkbs.cli.qsub, pkbs.worker.service, pkbs.dispatcher.app; "
         "print(pkbs.__file__)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
    )
    assert probe.stdout.strip().startswith(str(target))
    for script in ("qsub", "qstat", "qdel", "pkbs"):
        result = subprocess.run(
            [str(target / "bin" / script), "--version"],
            env=env, cwd=tmp_path, capture_output=True, text=True,
        )
        assert result.returncode == 0, result.stderr
        assert "0.1.0" in result.stdout
