"""`pkbs completion SHELL`: shell completion for `pkbs` (click's) and for the
q-commands (their options, read from each command's usage text, and the ids of the
caller's unfinished jobs, asked of the dispatcher when completing)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import click
from click.shell_completion import get_completion_class

from .client import Client
from .group import Command

# Each q-command and where its usage text is (the one list of its options).
Q_COMMANDS: dict[str, tuple[str, str]] = {
    "qsub": ("pkbs.cli.qsub", "USAGE"),
    "qstat": ("pkbs.cli.qstat", "USAGE"),
    "qalter": ("pkbs.cli.qalter", "USAGE"),
    "qdel": ("pkbs.cli.jobctl", "QDEL_USAGE"),
    "qhold": ("pkbs.cli.jobctl", "QHOLD_USAGE"),
    "qrls": ("pkbs.cli.jobctl", "QRLS_USAGE"),
    "qsig": ("pkbs.cli.jobctl", "QSIG_USAGE"),
    "qrerun": ("pkbs.cli.jobctl", "QRERUN_USAGE"),
}
# Their operands: a script or directory for qsub, job ids for the rest.
FILE_OPERANDS = frozenset({"qsub"})
SHELLS = ("bash", "zsh", "fish")
_OPTION = re.compile(r"(?<![\w-])-[A-Za-z0-9](?![\w-])")


def options_of(command: str) -> list[str]:
    """`-a`, `-A`, ... as the command's usage text lists them."""
    module, name = Q_COMMANDS[command]
    usage = str(getattr(importlib.import_module(module), name))
    return sorted(set(_OPTION.findall(usage)), key=lambda flag: (flag.lower(), flag))


def unfinished_job_ids() -> list[str]:
    """The caller's unfinished jobs, newest last ([] when the dispatcher cannot say)."""
    try:
        rows = Client().request("GET", "/jobs", query={"view": "table"})["rows"]
    except Exception:  # completion must never print an error into the shell
        return []
    return [str(row[0]) for row in rows]


def _bash_q_commands() -> str:
    cases = "\n".join(
        f'    {name}) opts="{" ".join(options_of(name))}";;' for name in Q_COMMANDS
    )
    names = " ".join(Q_COMMANDS)
    files = "|".join(sorted(FILE_OPERANDS))
    return f"""_pkbs_q_commands() {{
  local cur=${{COMP_WORDS[COMP_CWORD]}} cmd=${{COMP_WORDS[0]##*/}} opts
  case $cmd in
{cases}
  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  elif [[ $cmd == @({files}) ]]; then
    COMPREPLY=($(compgen -f -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$(pkbs completion --job-ids 2>/dev/null)" -- "$cur"))
  fi
}}
complete -F _pkbs_q_commands {names}
"""


def _fish_q_commands() -> str:
    lines = []
    for name in Q_COMMANDS:
        for flag in options_of(name):
            lines.append(f"complete -c {name} -s {flag[1]}")
        if name not in FILE_OPERANDS:
            lines.append(f"complete -c {name} -f -a '(pkbs completion --job-ids 2>/dev/null)'")
    return "\n".join(lines) + "\n"


def script(shell: str) -> str:
    """The whole completion script for `shell`."""
    from .admin import main

    source = get_completion_class(shell)
    assert source is not None
    pkbs_part = source(main, {}, "pkbs", "_PKBS_COMPLETE").source()
    if shell == "fish":
        return pkbs_part + "\n" + _fish_q_commands()
    q_part = _bash_q_commands()
    if shell == "zsh":  # zsh runs bash completion functions through bashcompinit
        q_part = "autoload -U +X bashcompinit && bashcompinit\nsetopt extendedglob\n" + q_part
    else:
        q_part = "shopt -s extglob\n" + q_part
    return pkbs_part + "\n" + q_part


def install_path(shell: str) -> Path:
    """Where each shell finds a user's completion without a change to its rc file
    (bash-completion's and fish's per-user directories); zsh: a file to source."""
    home = Path.home()
    return {
        "bash": home / ".local/share/bash-completion/completions/pkbs",
        "zsh": home / ".zsh/completions/pkbs.zsh",
        "fish": home / ".config/fish/completions/pkbs.fish",
    }[shell]


@click.command(cls=Command)
@click.argument("shell", type=click.Choice(SHELLS), required=False)
@click.option("--install", is_flag=True, help="Write the script where SHELL finds it.")
@click.option("--job-ids", is_flag=True, hidden=True, help="Print the caller's job ids.")
def completion(shell: str | None, install: bool, job_ids: bool) -> None:
    """Print (or --install) the completion script for SHELL: pkbs and qsub, qstat,
    qdel, qhold, qrls, qsig, qrerun, qalter (their options and your job ids)."""
    if job_ids:
        for job_id in unfinished_job_ids():
            click.echo(job_id)
        return
    if shell is None:
        raise click.UsageError("name a shell: bash, zsh or fish")
    text = script(shell)
    if not install:
        click.echo(text, nl=False)
        return
    target = install_path(shell)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    click.echo(f"wrote {target}", err=True)
    if shell == "zsh":
        click.echo(f"add to ~/.zshrc: source {target}", err=True)
    if shell == "bash":
        for name in Q_COMMANDS:  # bash-completion loads a command's file by its name
            link = target.with_name(name)
            link.unlink(missing_ok=True)
            link.symlink_to(target.name)
