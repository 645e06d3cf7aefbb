"""The Typer application every command module registers on, and the CLI's own error exit.

Kept apart from ``causalvis.cli`` (which imports the command modules) so that command
modules import it without an import cycle.
"""

from __future__ import annotations

import typer

from causalvis.errors import CausalvisError

app = typer.Typer(
    name="causalvis",
    help="The causal occlusion psychophysics benchmark: stimuli -> web experiment -> analysis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def fail(message: str) -> None:
    """Print one error line and exit 1 (for checks done in the CLI layer itself)."""
    raise CausalvisError(message)
