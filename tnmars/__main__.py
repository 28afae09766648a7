"""``python -m tnmars``: the same as the ``tnmars`` command."""
import sys

from .cli import main

sys.exit(main())
