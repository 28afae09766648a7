"""Entry point of the ``tnmars`` command: Ctrl-C is handled from the first instant.

The console script imports this module, which imports nothing but the standard library,
and only then imports tnmars (NumPy and opt_einsum take about 0.3 s) inside a handler: a
Ctrl-C during start-up ends with "tnmars: interrupted" and status 130, not a traceback.
Everything else is :func:`tnmars.cli.main`.
"""
from __future__ import annotations

import signal
import sys


def main() -> int:
    """Run ``tnmars`` with ``sys.argv``; returns the exit status (see :mod:`tnmars.cli`)."""
    try:
        from tnmars.cli import main as run

        code = run()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C cannot raise a traceback
        try:
            print("tnmars: interrupted", file=sys.stderr)
        except Exception:  # stderr closed: nothing left to tell
            pass
        return 130
    # the work is done: a Ctrl-C from here to the exit (interpreter shutdown included) would
    # otherwise end the process by the signal, silently, after a successful run
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
