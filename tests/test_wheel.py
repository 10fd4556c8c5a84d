"""The installed wheel carries pkbs.cli / pkbs.worker / pkbs.dispatcher (from the
top-level source folders), the dashboard's assets and working console scripts."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pkbs import local

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


def test_stack_processes_ignore_a_decoy_package_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pkbs up` run inside a source checkout: every Python process of the stack (the
    supervisor, WebDAV, the dispatcher, the workers) imports the installed pkbs, not the
    `pkbs/` of the working directory."""
    decoy = tmp_path / "checkout"
    (decoy / "pkbs").mkdir(parents=True)
    (decoy / "pkbs" / "__init__.py").write_text("raise SystemExit('decoy pkbs imported')\n")
    monkeypatch.setenv("PKBS_DOCKER_HOST", "")
    config = local.StackConfig(tmp_path / "home", workers=2, slots=1)
    supervisor = local.Supervisor(config)
    supervisor.plan()
    commands = [local.supervisor_argv(config)]
    commands += [c.argv for c in supervisor.children if c.argv[0] == sys.executable]
    assert len(commands) == 5  # supervisor, webdav, dispatcher, 2 workers
    for argv in commands:
        probe = list(argv)
        # The same command line, running a module that only imports pkbs.
        probe[probe.index("-m") + 1 :] = ["pkbs.constants"]
        result = subprocess.run(probe, cwd=decoy, capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stderr) == (0, ""), argv
