"""The click group of `pkbs` and of its subcommand groups: a PkbsError that a command
raises is reported as every command reports it (cli/command.py), named by the group
(`pkbs: ...`, `pkbs cluster: ...`)."""

from __future__ import annotations

from typing import Any

import click

from pkbs.errors import PkbsError

from .command import report


class Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PkbsError as error:
            ctx.exit(report(ctx.command_path, error))
