"""``python -m tnmars``: the same as the ``tnmars`` command."""
import sys

try:  # the launcher that also handles Ctrl-C at exit (installed with tnmars)
    from _tnmars_cli import main
except ImportError:  # pragma: no cover - a source tree on sys.path without the launcher
    from .cli import main

sys.exit(main())
