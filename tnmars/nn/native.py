"""Compiled pieces of the MARS training step on the CPU: optional, the Python path is the reference.

With every mask open, what a MARS layer adds to a training step is a few small operations
between the step's large kernels: the mask draw in the forward (``torch.rand_like``, reading
it on the host, the test that every entry is exactly 1) and the logits' prior push in the
optimizer step. Each costs 10-60 us of Python and dispatch there, several times its
microbenchmark (cold caches after the large kernels); compiled (``_native.cpp``), a few
microseconds. This module builds that code with :func:`torch.utils.cpp_extension.load` (a C++
compiler and ``ninja``; about 30 s, once per torch version and source) into a cache
directory, and every later process loads the built library.

Nothing else changes: the same draws under ``torch.manual_seed`` and the same gradients, bit
for bit (tested against the Python path), and without a build the Python path runs.

- ``python -m tnmars build-native`` (or :func:`build`) builds it and says where; :func:`status`
  says whether this process uses it.
- ``TNMARS_NATIVE=0`` never loads it; ``TNMARS_NATIVE=1`` builds it at first use when missing.
- ``TNMARS_CACHE`` (default ``$XDG_CACHE_HOME/tnmars``, else ``~/.cache/tnmars``) is where it
  lives: one folder per source, Python ABI, machine and torch version.

Whatever goes wrong in finding or loading it (no home directory, a library built elsewhere,
a missing source file) is a warning and the Python path, never a failed training step.

>>> status().split(" (")[0] in ("loaded", "built, not loaded yet", "built, not loadable", "not built", "turned off",
...                             "unavailable")
True
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import platform
import shutil
import sys
import sysconfig
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["build", "get", "status", "library_path", "disabled"]

SOURCE = Path(__file__).with_name("_native.cpp")
ENV = "TNMARS_NATIVE"
CACHE_ENV = "TNMARS_CACHE"

OFF = ("0", "off", "false", "no")

_UNSET = object()
_module: object = _UNSET  # the loaded module, None (not available), or _UNSET (not looked for yet)
_failure: str | None = None  # why a built library could not be loaded


def cache_dir() -> Path:
    """Where tnmars keeps what it builds: ``$TNMARS_CACHE``, else ``$XDG_CACHE_HOME/tnmars``,
    else ``~/.cache/tnmars``."""
    given = os.environ.get(CACHE_ENV)
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "tnmars"


def _names() -> tuple[str, Path]:
    """The extension's module name and build directory: one per source, Python ABI, machine and
    torch version (a library built for another of these cannot be loaded)."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    abi = sysconfig.get_config_var("SOABI") or f"py{sys.version_info[0]}{sys.version_info[1]}-{platform.machine()}"
    version = "".join(c if c.isalnum() or c in ".-" else "_" for c in f"{abi}-torch{torch.__version__}")
    return f"tnmars_native_{digest}", cache_dir() / "native" / f"{version}-{digest}"


def library_path() -> Path:
    """The built library's path (whether or not it exists yet)."""
    name, folder = _names()
    suffix = ".pyd" if sys.platform == "win32" else ".so"
    return folder / (name + suffix)


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: the file written next to the library once it was built and imported: a library without it
#: may be half-written by a build still running (ninja writes in place)
DONE = "built"
#: a build lock older than this is taken for the leftover of a killed build and removed
#: (``torch.utils.cpp_extension`` waits on it without a timeout)
STALE_LOCK_SECONDS = 900.0


def build(verbose: bool = False) -> ModuleType:
    """Compile the native ops now (about 30 s; a no-op when built) and use them from here on.

    Raises :class:`RuntimeError`, saying what is missing, when the compiler or ``ninja`` is
    not there or the cache directory cannot be written; the Python path keeps running then.
    A library that is there but cannot be loaded (built by a killed build, say) is built again.
    """
    global _module, _failure
    try:
        from torch.utils import cpp_extension

        path = library_path()
        name, folder = _names()
        if (folder / DONE).exists():
            try:
                module = _import(path)
            except (ImportError, OSError):  # left by something else: build it again
                shutil.rmtree(folder, ignore_errors=True)
            else:
                _module, _failure = module, None
                return module
        folder.mkdir(parents=True, exist_ok=True)
        lock = folder / "lock"
        if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
            print(f"tnmars: removing a build lock left {time.time() - lock.stat().st_mtime:.0f} s ago by a build "
                  f"that did not finish: {lock}", file=sys.stderr, flush=True)
            lock.unlink(missing_ok=True)
        print(f"tnmars: compiling the native MARS step ops into {folder} (about 30 s, once)",
              file=sys.stderr, flush=True)
        module = cpp_extension.load(name, [str(SOURCE)], extra_cflags=["-O2"], build_directory=str(folder),
                                    verbose=verbose)
        (folder / DONE).write_text(f"{name}\n")
    except (OSError, RuntimeError, ImportError, SystemExit) as err:  # (no compiler, no ninja, a failed build)
        raise RuntimeError(f"could not build tnmars's native ops ({type(err).__name__}: {err}). They need a C++ "
                           "compiler, ninja (pip install ninja) and a writable cache directory (TNMARS_CACHE); without "
                           "them the Python path runs, with the same results, about 0.1 ms slower per training "
                           "step.") from err
    _module, _failure = module, None
    return module


def _load() -> ModuleType | None:
    global _module, _failure
    module = None
    setting = os.environ.get(ENV, "").strip().lower()
    if setting not in OFF:
        try:
            name, folder = _names()
            if (folder / DONE).exists():
                module = _import(library_path())
            elif setting in ("1", "on", "true", "yes"):
                module = build()
            else:
                logging.getLogger(__name__).info(
                    "MARS training steps on the CPU run the Python path; `tnmars build-native` (once, about 30 s) "
                    "compiles the same draws and push, about 0.1 ms less per step")
        except (ImportError, OSError, RuntimeError) as err:  # (a missing source or home directory too)
            _failure = f"{type(err).__name__}: {err}"
            warnings.warn(f"tnmars's native ops are not used ({_failure}); the Python path runs, with the same "
                          "results", RuntimeWarning, stacklevel=3)
    _module = module
    return module


def get() -> ModuleType | None:
    """The native ops' module, None when not built or turned off (looked for once a process)."""
    module = _module
    if module is _UNSET:
        return _load()
    return module  # type: ignore[return-value]


def status() -> str:
    """Whether this process uses the native ops: "loaded", "built, not loaded yet", "built,
    not loadable (why)", "not built", "turned off (TNMARS_NATIVE=0)" or "unavailable (why)"."""
    if os.environ.get(ENV, "").strip().lower() in OFF:
        return f"turned off ({ENV}=0)"
    if isinstance(_module, ModuleType):
        return "loaded"
    try:
        built = (_names()[1] / DONE).exists()
    except (OSError, RuntimeError) as err:
        return f"unavailable ({type(err).__name__}: {err})"
    if built:
        return f"built, not loadable ({_failure})" if _failure else "built, not loaded yet"
    return "not built"


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the Python path inside the block (to compare the two, or to time the difference)."""
    global _module
    before = _module
    _module = None
    try:
        yield
    finally:
        _module = before
