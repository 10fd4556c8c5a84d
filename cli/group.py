"""The click classes of `pkbs`, its subcommand groups and their commands: an error is
reported as every command reports it (cli/command.py), named by the command that was
called (`pkbs logs: Unknown Job Id 9.pkbs`, `pkbs def apply: ...`). A click usage error
(an unknown option, a missing argument) is one too: `<command>: <message>`, then that
command's usage, exit 2."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from pkbs.errors import PkbsError, UsageError

from .command import report


def _usage(ctx: click.Context) -> str:
    text = ctx.get_usage() + "\n"
    option = ctx.command.get_help_option(ctx)
    if option is not None:
        text += f"Try '{ctx.command_path} {option.opts[0]}' for help.\n"
    return text


@contextmanager
def _reported(ctx: click.Context) -> Iterator[None]:
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise  # `pkbs` alone: click prints the help
    except click.UsageError as exc:
        where = exc.ctx or ctx
        error = UsageError(exc.format_message())
        ctx.exit(report(where.command_path, error, _usage(where)))
    except PkbsError as error:
        ctx.exit(report(ctx.command_path, error))


class Command(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with _reported(ctx):
            return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        with _reported(ctx):
            return super().invoke(ctx)


class Group(Command, click.Group):
    """Reports as Command does (its methods come first, then click.Group's)."""

    command_class = Command
    group_class = type  # its subgroups are Groups too
