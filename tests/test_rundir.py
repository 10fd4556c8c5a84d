"""A run's workspace (worker/rundir.py): reused only when the job left it as it was
handed out, so every job starts in empty private directories with empty outputs."""

from __future__ import annotations

import os
from pathlib import Path

from pkbs.worker.rundir import NodeFiles, RunDir, WorkspacePool

from pkbs.models import JobRecord, JobSpec
from pkbs.states import JobState


def _record(ncpus: int = 1, join: str = "n") -> JobRecord:
    spec = JobSpec(name="j", kind="stdin", entrypoint="STDIN", resources={"ncpus": str(ncpus)},
                   join=join)
    return JobRecord(number=7, server="pkbs", owner="u", spec=spec, state=JobState.RUNNING,
                     submit_id="s" * 16)


def test_a_workspace_the_job_left_with_files_only_is_used_again_empty(tmp_path: Path) -> None:
    pool = WorkspacePool(tmp_path)
    first = pool.take()
    (first.job / "out.txt").write_text("data")
    os.symlink("/etc/passwd", first.tmp / "link")
    first.out.write_text("stdout of the first run")
    first.err.write_text("")
    pool.give_back(first)
    again = pool.take()
    assert again == first
    assert list(again.job.iterdir()) == [] and list(again.tmp.iterdir()) == []
    assert again.out.read_text() == "" and again.err.read_text() == ""
    assert oct(again.job.stat().st_mode & 0o777) == "0o700"


def test_a_workspace_changed_otherwise_is_not_reused(tmp_path: Path) -> None:
    pool = WorkspacePool(tmp_path)
    nested, opened, replaced = pool.take(), pool.take(), pool.take()
    (nested.job / "sub").mkdir()
    (nested.job / "sub" / "f").write_text("x")
    opened.tmp.chmod(0o777)
    replaced.job.rmdir()
    replaced.job.write_text("a file where the directory was")
    for space in (nested, opened, replaced):
        space.out.write_text("old output")
        pool.give_back(space)
    for space in (nested, opened):
        assert not space.job.exists() and not space.tmp.exists() and not space.out.exists()
    fresh = pool.take()
    assert fresh not in (nested, opened) and list(fresh.job.iterdir()) == []


def test_an_output_file_linked_elsewhere_is_replaced_not_reused(tmp_path: Path) -> None:
    pool = WorkspacePool(tmp_path)
    space = pool.take()
    space.out.write_text("secret of run 1")
    os.link(space.out, tmp_path / "kept-by-a-job")
    target = tmp_path / "elsewhere"
    target.write_text("not the worker's")
    os.symlink(target, space.err)
    pool.give_back(space)
    assert not space.out.exists() and not space.err.exists()
    assert (tmp_path / "kept-by-a-job").read_text() == "secret of run 1"
    assert target.read_text() == "not the worker's"


def test_run_files_and_node_files(tmp_path: Path) -> None:
    pool, nodes = WorkspacePool(tmp_path), NodeFiles(tmp_path, "node1")
    run = RunDir(pool, nodes, _record(3))
    assert run.job != run.tmp and run.stdout != run.stderr
    assert run.nodefile.read_text() == "node1\n" * 3
    run.cleanup()
    run.nodefile.chmod(0o644)
    run.nodefile.write_text("tampered\n")  # a job of the same uid
    joined = RunDir(pool, nodes, _record(3, join="oe"))
    assert joined.nodefile.read_text() == "node1\n" * 3
    assert joined.job == run.job and joined.stdout == joined.stderr == run.stdout


def test_a_workspace_not_to_be_reused_is_removed(tmp_path: Path) -> None:
    pool = WorkspacePool(tmp_path)
    space = pool.take()
    space.out.write_text("x")
    pool.give_back(space, reuse=False)
    assert not any(path.exists() for path in space)
    assert pool.take() != space


def test_a_node_file_is_written_once_whatever_the_host_name(tmp_path: Path) -> None:
    nodes = NodeFiles(tmp_path, "nœud-1")
    first = nodes.path(2)
    assert first.read_text() == "nœud-1\n" * 2
    held = tmp_path / "held"
    os.link(first, held)  # keeps the inode: a file written again would be another one
    assert nodes.path(2).samefile(held)
