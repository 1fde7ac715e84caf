"""`agent-identity`: one executable, a subcommand per process or tool.

Subcommands are imported lazily so that `agent-identity --version` and the
small tools start fast and do not pull in kopf or the Kubernetes client.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from agent_identity import __version__

# subcommand name -> "module:attribute" of a click command or group
SUBCOMMANDS: dict[str, str] = {
    "devcluster": "agent_identity.cli.devcluster:devcluster",
    "crds": "agent_identity.cli.crds:crds",
    "operator": "agent_identity.cli.operator:operator",
    "admission": "agent_identity.cli.admission:admission",
    "whoami": "agent_identity.cli.agentclient:whoami",
    "check": "agent_identity.cli.agentclient:check",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *SUBCOMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None  # not built yet
            raise
        command: Any = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="agent-identity")
def cli() -> None:
    """Agent Identity Operator: governed identities for AI agents on Kubernetes."""


def main() -> None:
    cli()
