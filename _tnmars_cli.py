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


#: seconds between looks, while an import is under way, at whether a held-back Ctrl-C can be raised
IMPORT_RETRY = 0.02


def _importing(frame) -> bool:
    """Whether ``frame`` or a caller of it runs in the import machinery."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _interrupt(signum, frame) -> None:
    """Ctrl-C during the run: KeyboardInterrupt, as Python's default handler raises it, except
    while a module is being imported. A fit imports hundreds of modules lazily (its backends,
    tensorly, tqdm); a KeyboardInterrupt raised in a module lock's weakref callback there is
    printed as "Exception ignored ... Traceback" and lost, and the fit went on. There the
    interrupt is held back and looked at again every :data:`IMPORT_RETRY` seconds (SIGALRM)
    until the import is done, then raised again as SIGINT, so that whoever handles SIGINT by then
    (the save's deferral) gets it."""
    if _importing(frame):
        signal.signal(signal.SIGALRM, _interrupt)
        signal.setitimer(signal.ITIMER_REAL, IMPORT_RETRY)
        return
    if signum != signal.SIGINT:  # the retry, the import done: SIGINT to its handler now
        signal.raise_signal(signal.SIGINT)
        return
    raise KeyboardInterrupt


def main() -> int:
    """Run ``tnmars`` with ``sys.argv``; returns the exit status (see :mod:`tnmars.cli`)."""
    hold = hasattr(signal, "setitimer") and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    try:
        run = _import_run()
        if hold:
            signal.signal(signal.SIGINT, _interrupt)
        code = run()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C cannot raise a traceback
        if hold:
            signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            print("tnmars: interrupted", file=sys.stderr)
        except Exception:  # stderr closed: nothing left to tell
            pass
        return 130
    # the work is done: a Ctrl-C from here to the exit (interpreter shutdown included) would
    # otherwise end the process by the signal, silently, after a successful run
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hold:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
