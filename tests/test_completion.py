"""Shell completion (`pkbs completion bash|zsh|fish`): pkbs's commands, the
q-commands' options from their usage texts, and the caller's job ids, completed by a
real bash."""

from __future__ import annotations

import shutil
import subprocess

from tests.stackutil import Stack


def _complete(stack: Stack, script: str, words: list[str], function: str) -> list[str]:
    """COMPREPLY of `function` in bash after sourcing `script`, for `words` (the last
    one being completed)."""
    quoted = " ".join(f"'{w}'" for w in words)
    program = (
        f"{script}\nCOMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; "
        f"COMP_LINE='{' '.join(words)}'; COMP_POINT=${{#COMP_LINE}}; "
        f"{function}; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    )
    done = stack.run("bash", "-c", program)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completes_commands_options_and_job_ids(stack: Stack) -> None:
    script = stack.run("pkbs", "completion", "bash")
    assert script.returncode == 0, script.stderr
    text = script.stdout
    assert "complete -F _pkbs_q_commands qsub qstat" in text
    # pkbs's own subcommands, through click's completion
    assert "status" in _complete(stack, text, ["pkbs", "sta"], "_pkbs_completion pkbs")
    # a q-command's options, from its usage text
    assert {"-N", "-J", "-W"} <= set(_complete(stack, text, ["qsub", "-"], "_pkbs_q_commands"))
    assert _complete(stack, text, ["qsig", "-"], "_pkbs_q_commands") == ["-s"]
    # the caller's unfinished jobs
    job_id = stack.qsub("-h", input="true\n")
    try:
        assert job_id in _complete(stack, text, ["qdel", ""], "_pkbs_q_commands")
        other = stack.as_user("completion-other")
        ids = stack.run("pkbs", "completion", "--job-ids", env=other)
        assert ids.returncode == 0 and job_id not in ids.stdout.split()
    finally:
        stack.run("qdel", job_id)


def test_zsh_and_fish_scripts_and_install(stack: Stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    fish = stack.run("pkbs", "completion", "fish").stdout
    assert "complete -c qsig -s s" in fish and "pkbs completion --job-ids" in fish
    zsh = stack.run("pkbs", "completion", "zsh").stdout
    assert "bashcompinit" in zsh and "#compdef pkbs" in zsh
    if shutil.which("zsh"):
        assert subprocess.run(["zsh", "-n", "-c", zsh]).returncode == 0
    home = {"HOME": str(tmp_path)}
    done = stack.run("pkbs", "completion", "bash", "--install", env=home)
    assert done.returncode == 0, done.stderr
    where = tmp_path / ".local/share/bash-completion/completions"
    assert "_pkbs_q_commands" in (where / "pkbs").read_text()
    assert (where / "qstat").resolve() == (where / "pkbs").resolve()
    assert stack.run("pkbs", "completion").returncode != 0  # a shell must be named
