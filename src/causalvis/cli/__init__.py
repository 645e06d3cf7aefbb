"""The ``causalvis`` command line: thin wrappers, one module per command group.

Every command parses its arguments, calls one library function, and prints. User
errors (:class:`CausalvisError`) become one ``error: ...`` line and exit code 1.
"""

from __future__ import annotations

import sys

from causalvis.cli.app import app, fail
from causalvis.errors import CausalvisError

__all__ = ["app", "fail", "main"]


def _register_commands() -> None:
    # Each module adds its commands to ``app`` on import; heavy imports stay inside them.
    from causalvis.cli import (  # noqa: F401
        analyze_cmd,
        demo_cmd,
        models_cmd,
        observe_cmd,
        serve_cmd,
        study_cmd,
    )
    from causalvis.cli.recruit import recruit_app

    if not any(group.name == "recruit" for group in app.registered_groups):
        app.add_typer(recruit_app, name="recruit")


def main(argv: list[str] | None = None) -> None:
    _register_commands()
    # Typer/Click handle usage errors themselves (standalone mode); our own user errors
    # become one line on stderr.
    try:
        app(args=argv, prog_name="causalvis")
    except CausalvisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
