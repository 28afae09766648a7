"""Progress of a fit: one bar per phase, named after it, the caller's callback, and a log.

Every phase of :func:`tnmars.fit` (``relaxation``, ``selection``, ``polish``) reports through
one :class:`Reporter`, so no phase runs silently. Bars follow tqdm's conventions and
``TQDM_DISABLE=1`` turns them off; messages go to ``logging.getLogger("tnmars.fit")``.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .._checks import warn

__all__ = ["Reporter", "labelled", "current_label", "progress_enabled"]

log = logging.getLogger("tnmars.fit")

#: the name bars and log lines give the running call: a function that runs fits (``tnmars.search``,
#: once per start) names them after itself through :func:`labelled`
_label: contextvars.ContextVar[str] = contextvars.ContextVar("tnmars_progress_label", default="tnmars.fit")


def current_label() -> str:
    """The name fits report under here (``tnmars.fit`` outside :func:`labelled`)."""
    return _label.get()


@contextlib.contextmanager
def labelled(label: str) -> Iterator[None]:
    """Within the block, fits report as ``label`` (``"tnmars.search, start 2/3"``) instead of
    ``tnmars.fit``: the bar a user sees names the function they called."""
    token = _label.set(label)
    try:
        yield
    finally:
        _label.reset(token)

#: what a bar shows of a step's information, in this order
SHOWN = ("loss", "objective", "ranks", "move", "best_error", "refit")
#: seconds between two redraws of a bar from :meth:`Reporter.note`
NOTE_INTERVAL = 1.0


def progress_enabled(progress: bool | None) -> bool:
    """``progress=None`` means on, unless the environment sets ``TQDM_DISABLE``."""
    if progress is None:
        return os.environ.get("TQDM_DISABLE", "").strip().lower() in ("", "0", "false", "no")
    if not isinstance(progress, (bool, int, np.bool_, np.integer)) or progress not in (0, 1):  # bools and 0 / 1
        raise TypeError(f"progress must be True, False or None; got {progress!r}")
    return bool(progress)


class Reporter:
    """Bars, callback and log for the phases of one fit.

    ``callback(step, info)`` receives ``info`` with at least ``phase`` and ``ranks``; it may
    return True to stop the fit (the best state so far is returned).
    """

    def __init__(self, progress: bool | None, callback: Callable[[int, dict], Any] | None = None) -> None:
        self.enabled = progress_enabled(progress)
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be a function callback(step, info) (or None); got {callback!r}")
        self.callback = callback
        self.step = 0
        self.stopped = False
        self._bar = None
        self.phase = ""
        self.label = _label.get()
        self._shown: dict[str, str] = {}
        self._noted = 0.0

    def start(self, phase: str, total: int | None = None, note: str = "") -> None:
        self.close()
        self.phase = phase
        log.info("%s: %s%s", self.label, phase, f" ({note})" if note else "")
        if self.enabled:
            from tqdm.auto import tqdm

            # disable=False: the caller decided (``progress=True`` wins over TQDM_DISABLE, which
            # tqdm reads once, at its import, as the default of every bar)
            self._bar = tqdm(total=total, desc=f"{self.label} [{phase}]", leave=False, disable=False,
                             unit="step" if total else "fit")

    def record(self, info: dict[str, Any], advance: int = 1) -> bool:
        """Report one step (a relaxation record, a refitted candidate); True means stop."""
        self.step += 1
        info = {"phase": self.phase, "label": self.label, **info}  # (label: which fit, as the bar says)
        if self._bar is not None:
            self._shown = _shown(info)
            self._bar.set_postfix(self._shown, refresh=False)
            self._bar.update(advance)
            self._noted = time.monotonic()  # a refit shows its sweeps once it has run a while
        if self.callback is not None and not self.stopped:  # (asked once: the steps that finish the stop are not asked
            answer = self.callback(self.step, info)          # again, and warned of again, an outside probe)
            if isinstance(answer, (bool, np.bool_)):
                if answer:
                    # loud: a logging callback can return True by accident (tqdm's update() does)
                    what = ("the held-out checks are skipped (the fit is final)" if self.phase == "checks" else
                            "the fit stops there and returns the best state so far (interrupted=True)")
                    warn(f"{self.label}: the callback returned True at step {self.step} ({self.phase}): {what}",
                         UserWarning)
                    self.stopped = True
            elif isinstance(answer, (int, np.integer)):
                # a logging callback's last call returns a count (file.write): not a request to stop
                if not getattr(self, "_warned_int", False):
                    self._warned_int = True
                    warn(f"{self.label}: the callback returned {answer!r}, an int: only True stops the fit, so "
                         "it goes on (return None to silence this)", UserWarning)
            elif answer is not None:
                raise TypeError(f"the callback returned {answer!r}: return True to stop the fit, or None / False "
                                "to go on")
        return self.stopped

    def note(self, info: dict[str, Any]) -> None:
        """Show work in progress between two steps (a long refit's sweeps) on the bar, from
        :data:`NOTE_INTERVAL` seconds after the last step and at most once per that interval;
        not a step (no callback, no count)."""
        log.debug("%s: %s %s", self.label, self.phase, info)
        if self._bar is None:
            return
        now = time.monotonic()
        if now - self._noted < NOTE_INTERVAL:
            return
        self._noted = now
        self._bar.set_postfix({**self._shown, **_shown(info)}, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _shown(info: dict[str, Any]) -> dict[str, str]:
    """The bar's postfix: the :data:`SHOWN` entries of ``info``, floats to 4 digits, rank tuples
    joined by commas."""
    return {k: (f"{info[k]:.4g}" if isinstance(info[k], float) else
                ",".join(map(str, info[k])) if isinstance(info[k], tuple) else str(info[k]))
            for k in SHOWN if k in info}
