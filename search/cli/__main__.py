"""``python -m search.cli``: the same as the ``peftsweep`` command."""

from search.cli import _entry

_entry()
