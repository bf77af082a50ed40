"""What the command line needs from its libraries beyond what they give as they are.

Kept apart from ``cli.py`` so that the commands stay a list of commands: the version an operator
asks for with ``seamguard --version``, and help screens that show a flag as a flag.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as distribution_version
from typing import Any

from seamguard import __version__

DISTRIBUTION = "seamguard"


def installed_version() -> str:
    """The version of the installed distribution: what pip reports, so that a bug report and
    ``pip show seamguard`` agree. A source tree run without installing falls back to the
    package's own ``__version__``."""
    try:
        return distribution_version(DISTRIBUTION)
    except PackageNotFoundError:
        return __version__


def show_flags_as_flags() -> None:
    """Help screens list a flag (``--help``, ``--live/--no-live``) without a value type.

    typer 0.29 vendors its own click (``typer._click``: the click installed beside it is no longer
    the one it runs) and renders the type column of its rich help from each parameter's
    annotation, ``<bool>`` included. Up to 0.28 it left out any type naming ``bool``; 0.29 dropped
    that filter, so every command's help read ``--help <bool>``, as if the flag took a value. A
    flag takes none: its type is hidden again here, for every command and sub-app, including ones
    added later. With a typer that has no ``TyperOption.display_type_rich`` (0.28 and older, which
    hide it themselves) this does nothing; it is safe to call more than once.
    """
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "_seamguard_flags_hidden", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if self.is_flag and not self.count:
            return None  # ``rich_utils`` leaves the column empty for None
        result: str | None = shown(self, ctx)
        return result

    display_type_rich._seamguard_flags_hidden = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
