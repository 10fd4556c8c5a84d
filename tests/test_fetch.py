"""`pkbs fetch` brings back a job's .o/.e and the files it created or changed (not its
unchanged inputs), large files with a progress bar on stderr; `qstat -f` names the
finishing run's `results_url`; another user's fetch is refused."""

from __future__ import annotations

import getpass
import hashlib
import re
from pathlib import Path

from tests.stackutil import (
    Stack,
    cli,
    fetch_results,
    files_under,
    job_number,
    submit,
    wait_state_as,
    write_file,
)


def test_fetch_outputs_and_changed_files_only(stack: Stack, tmp_path: Path) -> None:
    job = tmp_path / "job"
    write_file(job / "run.sh", "#!/bin/bash\n"
               "echo created > new.txt\n"
               "mkdir -p sub/deeper && echo nested > sub/deeper/made.txt\n"
               "echo changed >> edit.txt\n"
               "cat keep.txt\n", 0o755)
    write_file(job / "keep.txt", "unchanged input\n")
    write_file(job / "edit.txt", "original\n")
    write_file(job / "sub" / "input.dat", "payload in a subdirectory\n")
    job_id = submit(stack, "-N", "res", str(job))
    assert stack.wait_state(job_id, "F")["Exit_status"] == 0
    seq = job_number(job_id)
    dest = tmp_path / "results"
    result = fetch_results(stack, job_id, dest)
    assert result.stderr == ""  # no progress for small files
    expected = {
        f"res.o{seq}": len("unchanged input\n"),
        f"res.e{seq}": 0,
        "new.txt": len("created\n"),
        "edit.txt": len("original\nchanged\n"),
        "sub/deeper/made.txt": len("nested\n"),
    }
    assert files_under(dest) == expected
    assert sorted(result.stdout.splitlines()) == sorted(str(dest / n) for n in expected)
    assert (dest / f"res.o{seq}").read_text() == "unchanged input\n"
    assert (dest / "edit.txt").read_text() == "original\nchanged\n"
    assert (dest / "sub" / "deeper" / "made.txt").read_text() == "nested\n"


def test_large_file_round_trips_with_progress(stack: Stack, tmp_path: Path) -> None:
    script = "dd if=/dev/urandom of=big.bin bs=1M count=3 2>/dev/null\nsha256sum big.bin\n"
    job_id = submit(stack, "-N", "big", input=script)
    assert stack.wait_state(job_id, "F")["Exit_status"] == 0
    result = fetch_results(stack, job_id, tmp_path)
    data = (tmp_path / "big.bin").read_bytes()
    assert len(data) == 3 * 1024 * 1024
    printed = (tmp_path / f"big.o{job_number(job_id)}").read_text()
    assert printed == f"{hashlib.sha256(data).hexdigest()}  big.bin\n"
    assert "big.bin" in result.stderr  # the progress bar, on stderr
    assert "big.o" not in result.stderr  # small files have none


def test_full_status_shows_results_url(stack: Stack) -> None:
    job_id = submit(stack, "-N", "where", input="true\n")
    stack.wait_state(job_id, "F")
    result = cli(stack, "qstat", "-x", "-f", job_id)
    assert result.returncode == 0
    urls = re.findall(r"^    results_url = (\S+)$", result.stdout, re.MULTILINE)
    assert len(urls) == 1, result.stdout
    assert re.fullmatch(rf"https?://[^/]+/pkbs/{re.escape(getpass.getuser())}/"
                        rf"{re.escape(job_id)}/run-1/", urls[0]), urls[0]
    assert stack.job(job_id)["results_url"] == urls[0]


def test_fetch_of_other_users_job_is_refused(stack: Stack, tmp_path: Path) -> None:
    alice, bob = stack.as_user("alice"), stack.as_user("bob")
    job_id = submit(stack, "-N", "secret", input="echo alice only\n", env=alice)
    dest = tmp_path / "stolen"
    refused = cli(stack, "pkbs", "fetch", job_id, str(dest), env=bob)
    assert refused.returncode == 15007 & 0xFF
    assert (refused.stdout, refused.stderr) == ("", f"pkbs: Unauthorized Request {job_id}\n")
    assert not dest.exists()
    # alice herself gets it.
    wait_state_as(stack, job_id, "F", alice)
    fetch_results(stack, job_id, tmp_path / "mine", env=alice)
    assert (tmp_path / "mine" / f"secret.o{job_number(job_id)}").read_text() == "alice only\n"
