"""Shared command-line option checks and the help/error conventions of the ``atlas`` CLI.

Every option value is checked when it is parsed (a typer callback), so a bad value ends the
command with one ``error: ...`` line and exit code 2 before any work starts:

- :func:`positive_int` / :func:`optional_positive_int`: counts such as ``--workers``;
- :func:`memory_size`: sizes such as ``--memory-limit 2GB``;
- :func:`output_file`: a file to write (its folder must exist; it must not be a folder);
- :func:`shape_3d`: ``z,y,x`` sizes.

:data:`SitesOption`, :data:`StoreOption` and :data:`SiteOption` are the options every command
that reads the catalog takes.

:class:`AtlasGroup` is the root command class: help shows flags as plain switches (no
``<bool>`` value placeholder), and :func:`run` turns usage errors, Atlas errors and unexpected
exceptions into one line each (tracebacks only with ``--debug`` or ``ATLAS_DEBUG=1``).
"""

from __future__ import annotations

import os
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

DEBUG_ENV = "ATLAS_DEBUG"
#: exit code of a bad command line or an Atlas error (a problem the user can fix)
EXIT_USAGE = 2
#: exit code of an unexpected internal error
EXIT_INTERNAL = 3

#: where the sites are: a sites.toml, or one store URL (with --site naming it)
SitesOption = typer.Option(None, "--sites", help="sites.toml (default: $ATLAS_SITES).")
StoreOption = typer.Option(None, "--store", help="A single store URL instead of sites.toml.")
SiteOption = typer.Option(
    None,
    "--site",
    help="Site name (with --store; default: the site the store records, else 'local').",
)

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(KB|MB|GB)\s*$", re.IGNORECASE)


def positive_int(value: int) -> int:
    """A count of at least 1."""
    if value is not None and value < 1:
        raise typer.BadParameter(f"must be at least 1, got {value}")
    return value


def optional_positive_int(value: int | None) -> int | None:
    """A count of at least 1, or ``None`` (the documented default)."""
    return None if value is None else positive_int(value)


def memory_size(value: str) -> str:
    """A memory size such as ``2GB``, ``512MB`` or ``1.5GB`` (units KB, MB, GB)."""
    match = _SIZE_RE.match(value or "")
    if match is None or float(match.group(1)) <= 0:
        raise typer.BadParameter(
            f"{value!r} is not a memory size; use a number and KB, MB or GB, e.g. 2GB, 512MB"
        )
    return f"{match.group(1)}{match.group(2).upper()}"


def output_file(value: Path | None) -> Path | None:
    """A file to be written: its folder exists, and it is not itself a folder."""
    if value is None:
        return None
    folder = value.expanduser().resolve().parent
    if not folder.is_dir():
        raise typer.BadParameter(f"the folder {folder} does not exist; create it first")
    if value.is_dir():
        raise typer.BadParameter(f"{value} is a folder; give a file name")
    if not os.access(folder, os.W_OK):
        raise typer.BadParameter(f"the folder {folder} is not writable")
    return value


def shape_3d(value: str) -> str:
    """``z,y,x`` with three positive integers ('' keeps the command's default)."""
    if not value:
        return value
    parts = value.split(",")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) != 3 or min(dims) < 1:
        raise typer.BadParameter(f"{value!r} is not z,y,x: three positive integers, e.g. 24,96,96")
    return value


def parse_shape(value: str) -> tuple[int, int, int] | None:
    """The sizes of a :func:`shape_3d` value (``None`` for '')."""
    if not value:
        return None
    z, y, x = (int(p) for p in shape_3d(value).split(","))
    return z, y, x


def _plain_flags(params: list[Any]) -> None:
    """Show boolean flags without a ``<bool>`` value placeholder: they take no value."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


def _plain_flags_tree(command: Any, ctx: Any) -> None:
    _plain_flags(command.get_params(ctx))
    for sub in getattr(command, "commands", {}).values():
        _plain_flags_tree(sub, ctx)


class AtlasGroup(TyperGroup):
    """The root command group: flags render as switches in every command's help."""

    def get_params(self, ctx: Any) -> list[Any]:
        """The group's parameters, with boolean flags shown as plain switches."""
        params = super().get_params(ctx)
        _plain_flags(params)
        return params

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """The sub-command ``cmd_name``, with its flags (and its sub-commands') as switches."""
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _plain_flags_tree(command, ctx)
        return command


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def debug_requested(argv: list[str]) -> bool:
    """Whether tracebacks were asked for (``--debug`` before the command, or ATLAS_DEBUG)."""
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


def run(app: Callable[..., Any], argv: list[str], error: Callable[[str], None]) -> int:
    """Run the typer ``app`` on ``argv``; returns the exit code, reporting errors in one line.

    ``error`` prints one message line (to stderr). Usage errors and Atlas errors exit with
    :data:`EXIT_USAGE`; unexpected exceptions with :data:`EXIT_INTERNAL`, naming only the
    exception type and where it was raised (messages of foreign exceptions may hold data).
    """
    from atlas.errors import AtlasError

    try:
        code = app(args=argv, standalone_mode=False)
    except TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group called without a command
            ctx = getattr(exc, "ctx", None)
            if ctx is not None:
                help_text = ctx.get_help()
                if help_text:
                    print(help_text)
            return 0
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        error(_one_line(exc.format_message()) + hint)
        return int(getattr(exc, "exit_code", EXIT_USAGE) or EXIT_USAGE)
    except typer.Abort:
        error("aborted")
        return 1
    except AtlasError as exc:
        error(f"{type(exc).__name__}: {_one_line(str(exc))}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except Exception as exc:
        if debug_requested(argv):
            traceback.print_exc()
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if f"{os.sep}atlas{os.sep}" in f.filename] or frames
        where = f" in {Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else ""
        error(
            f"internal error: {type(exc).__name__}{where}. This is a bug in Atlas; rerun with "
            f"--debug (or {DEBUG_ENV}=1) for the traceback and report it"
        )
        return EXIT_INTERNAL
    return code if isinstance(code, int) else 0
