"""Errors that end a command with a one-line message instead of a traceback."""


class VtemuError(Exception):
    """Base class: the CLI prints str(error) on one line and exits non-zero."""


class BadInput(VtemuError):
    """The user gave vtemu something it cannot use (missing file, bad option, bad image)."""


class AssemblyError(BadInput):
    """A guest source did not assemble, or its image failed the round-trip check."""


class ImageError(BadInput):
    """A kernel image is not a loadable multiboot v1 image."""


class UnsupportedHost(VtemuError):
    """The installed Unicorn build does not behave as vtemu was calibrated for."""
