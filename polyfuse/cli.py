"""The `polyfuse` command line. Each verb family lives in ``polyfuse.commands.<family>``."""

from __future__ import annotations

import importlib
import os
import sys

import typer

app = typer.Typer(
    name="polyfuse",
    help="Multimodal deep learning: train, compare, evaluate and deploy fused models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: Modules under polyfuse.commands; each has ``register(app: typer.Typer) -> None``.
COMMAND_MODULES = ("info", "datasets", "data", "train", "demo", "deploy", "crossmodal", "benchmark", "tune")


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"polyfuse.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"polyfuse.commands.{name}":
                continue  # that family is not built yet
            raise
        module.register(app)


_register_all()


def main() -> None:
    """Console entry point: user errors print one clear message, no traceback."""
    from polyfuse.errors import PolyfuseError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except PolyfuseError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
