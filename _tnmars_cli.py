"""Entry point of the ``tnmars`` command: Ctrl-C is handled from the first instant.

The console script imports this module, which imports nothing but the standard library,
and only then imports tnmars (NumPy and opt_einsum take about 0.3 s) inside a handler: a
Ctrl-C during start-up ends with "tnmars: interrupted" and status 130, not a traceback.
Everything else is :func:`tnmars.cli.main`.
"""
from __future__ import annotations

import signal
import sys


def _import_run():
    """Import tnmars with Ctrl-C held back: a KeyboardInterrupt raised inside the import
    machinery (a module lock's weakref callback) is printed by the interpreter as "Exception
    ignored ... Traceback" and lost. A Ctrl-C that arrives here is acted on once the import
    is done. (An inherited SIG_IGN, as in background jobs, is left alone.)"""
    pending: list[int] = []
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.default_int_handler:
        signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        from tnmars.cli import main as run
    finally:
        if previous is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt
    return run


def main() -> int:
    """Run ``tnmars`` with ``sys.argv``; returns the exit status (see :mod:`tnmars.cli`)."""
    try:
        code = _import_run()()
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
