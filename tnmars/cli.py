"""The ``tnmars`` command: fit a tensor with rank selection, run the demo, inspect files.

Examples
--------
``tnmars demo`` fits a synthetic tensor of known ranks and prints what MARS found.
``tnmars fit data.npy --format tucker --max-rank 10`` fits your own tensor and saves the
result to ``data.fit.npz``; ``tnmars info data.fit.npz`` describes it.

Exit status: 0 success; 1 a failed fit (a non-finite error), an internal error, or output
that could not be written (stdout closed, a full disk: one line on stderr, after the command
finished its work); 2 a usage or input error, reported as one line on stderr (``--traceback`` shows the full
Python traceback instead, for bug reports, with the same status); 130 Ctrl-C (outside the
training loop, where Ctrl-C stops training and the best state so far is reported and saved);
141 when the reader of the output went away (``tnmars info --json | head``), silently, after
the command finished its work (``tnmars fit ... | head`` still saves the fit).
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import logging
import math
import os
import re
import shlex
import signal
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._container import META_KEY

__all__ = ["main", "build_parser"]

FORMATS = ("tucker", "cp", "tt", "tr")
_FORMAT_NAMES = {"tucker": "Tucker", "cp": "CP", "tt": "tensor-train", "tr": "tensor-ring"}


class CLIError(Exception):
    """A user error: reported as one line, exit status 2."""


class FitFailed(Exception):
    """The computation ran but its result is not usable (NaN): one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse's default prints the usage block too)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _fit_defaults() -> dict[str, Any]:
    """tnmars.fit's actual defaults, so --help never states a stale number."""
    import inspect
    from importlib import import_module

    fitting = import_module("tnmars.fitting")
    sig = inspect.signature(fitting.fit).parameters
    relax = fitting.Relaxation()
    return {
        "prior": str(sig["prior"].default),
        "proposal": str(sig["proposal"].default),
        "prior_strength": f"{fitting.api.DEFAULT_STRENGTH:g}",
        "pi": str(relax.pi),
        "alpha": "0.5 (masks open: the relaxation starts from a least-squares fit)",
        "steps": str(relax.steps),
        "lr": "1e-3",
    }


def _version() -> str:
    from . import __version__

    return __version__


# ------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tnmars`` command (exposed for documentation tools)."""
    parser = _Parser(
        prog="tnmars",
        description="Tensor networks that select their own ranks (MARS: masked automatic rank selection).",
        epilog="Run 'tnmars COMMAND --help' for the options of each command. Start with 'tnmars demo'.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dflt = _fit_defaults()
    parser.add_argument("--version", action="version", version=f"tnmars {_version()}")
    parser.add_argument("--traceback", action="store_true",
                        help="on error, show the full Python traceback instead of one line (for bug reports)")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="show tnmars's log messages (the 'tnmars' logger, level INFO) on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser,
                                help="what to do (each has its own --help)")

    # ---- fit
    fit = sub.add_parser(
        "fit",
        help="fit a tensor stored in a .npy/.npz file and select the ranks",
        description=(
            "Fit DATA with a tensor network of ranks at most --max-rank and select the ranks: a\n"
            "proposal from the data's spectra, then a search that adds and removes rank indices\n"
            "under an Occam (BIC) criterion (--prior bernoulli: the MARS paper's learned masks).\n"
            "Prints the selected ranks, the relative error and the compression, and saves the\n"
            "fit result (network at the selected ranks, history) to --out."
        ),
        epilog=(
            "examples:\n"
            "  tnmars fit data.npy --format tucker --max-rank 10\n"
            "  tnmars fit data.npz --key X --format tt --max-rank 8 --observed mask.npy --out model.npz\n"
            "  tnmars fit data.npy --format 'aA,AbB,BcC,Cd->abcd' --max-rank 6   # any einsum graph\n"
            "NaN or Inf entries are refused (as tnmars.fit refuses them) unless they are marked missing:\n"
            "with --observed, or with --nan-as-missing."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fit.add_argument("data", metavar="DATA", help="the tensor: a .npy file, or a .npz file (see --key)")
    fit.add_argument("--format", "-f", default="tucker", metavar="FORMAT",
                     help="network: tucker, cp, tt (tensor train), tr (tensor ring), or an einsum spec "
                          "such as 'aA,AbB,Bc->abc' whose open modes match the data's modes (default: tucker)")
    fit.add_argument("--max-rank", "-r", default=None, metavar="R",
                     help="starting (maximal) rank of every bond, or one per bond separated by commas "
                          "(e.g. 8 or 4,8,8). Default: the largest mode size, or more where the observations determine "
                          "more (clipped to what the format or spec allows)")
    fit.add_argument("--min-rank", default=None, metavar="R",
                     help="smallest rank of every bond, or one per bond separated by commas, in --max-rank's order: "
                          "the search removes no index below it (default: 1). With the same ranks as --max-rank "
                          "(e.g. --max-rank 4,8,8 --min-rank 4,8,8) it fits at those ranks, not selected")
    fit.add_argument("--observed", metavar="MASK", default=None,
                     help="a .npy/.npz boolean (or 0/1) array of DATA's shape, True where an entry is observed: "
                          "fit only those (tensor completion) and report the error on the others too")
    fit.add_argument("--nan-as-missing", action="store_true",
                     help="treat NaN/Inf entries of DATA as missing (tensor completion on the finite entries) "
                          "instead of refusing them")
    fit.add_argument("--key", default=None,
                     help="array name inside a .npz DATA file holding several arrays (also read from a MASK .npz "
                          "that has an array of that name)")
    fit.add_argument("--observed-key", default=None, metavar="KEY",
                     help="array name inside a .npz MASK file holding several arrays (default: --key's name when "
                          "MASK has it, else MASK's only array)")
    fit.add_argument("--out", "-o", default=None, metavar="FILE",
                     help="where to save the fit result (.npz or .safetensors; default: DATA's name with "
                          "'.fit.npz'). Load it with tnmars.load(FILE)")
    fit.add_argument("--force", action="store_true",
                     help="replace the output file if it exists (without it an existing file is refused, before "
                          "the fit runs)")
    fit.add_argument("--prior", choices=("bic", "bernoulli"), default=None,
                     help="what decides the ranks: bic (the MAP objective under an Occam prior, (1/2) log N per "
                          "degree of freedom, searched by adding and removing rank indices with exact refits) or "
                          f"bernoulli (the paper's MARS relaxation alone) (default: {dflt['prior']})")
    fit.add_argument("--prior-strength", type=float, default=None,
                     help=f"Occam prior strength c; above 1 prunes more (default: {dflt['prior_strength']})")
    fit.add_argument("--proposal", choices=("auto", "spectral", "greedy", "mars"), default=None,
                     help="where the bic search starts: spectral (EVBMF or MDL on unfoldings; Tucker/TT/TR), greedy "
                          "(rank 1 everywhere), mars (the relaxation's MAP ranks), auto: spectral for "
                          f"Tucker/TT/TR (completions too), greedy otherwise (default: {dflt['proposal']})")
    fit.add_argument("--steps", type=int, default=None,
                     help=f"Adam steps of the MARS relaxation (default: {dflt['steps']})")
    fit.add_argument("--pi", type=float, default=None,
                     help="MARS relaxation: prior probability of keeping a rank index, in (0, 0.5]; smaller "
                          f"prunes harder (default: {dflt['pi']})")
    fit.add_argument("--alpha", type=float, default=None,
                     help="MARS relaxation: mean of the initial mask logits, phi = sigmoid(alpha) "
                          f"(default: {dflt['alpha']})")
    fit.add_argument("--lr", type=float, default=None,
                     help=f"MARS relaxation: Adam learning rate of the cores (default: {dflt['lr']})")
    fit.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    fit.add_argument("--backend", choices=("numpy", "torch", "cupy"), default="numpy",
                     help="array library to train with (default: numpy)")
    fit.add_argument("--device", default=None, help="device for torch/cupy, e.g. cuda:0 (default: CPU)")
    fit.add_argument("--dtype", choices=("float64", "float32"), default=None,
                     help="precision of the computation (default: the data's float type, else float64)")
    fit.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    # ---- demo
    demo = sub.add_parser(
        "demo",
        help="fit a synthetic tensor of known ranks and compare what MARS selects (seconds)",
        description=(
            "Generate a noisy low-rank tensor with known ranks, fit it from larger maximal ranks with\n"
            "MARS, and print the selected ranks next to the true ones, with the error and the compression."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--format", "-f", choices=FORMATS, default="tucker",
                      help="format of the synthetic tensor and of the fit (default: tucker)")
    demo.add_argument("--noise", type=float, default=0.01,
                      help="Gaussian noise, relative to the signal's RMS (default: 0.01)")
    demo.add_argument("--prior", choices=("bic", "bernoulli"), default=None,
                      help=f"what decides the ranks, as for 'tnmars fit' (default: {dflt['prior']})")
    demo.add_argument("--proposal", choices=("auto", "spectral", "greedy", "mars"), default=None,
                      help=f"where the bic search starts, as for 'tnmars fit' (default: {dflt['proposal']})")
    demo.add_argument("--steps", type=int, default=None,
                      help=f"Adam steps of the MARS relaxation (default: {dflt['steps']})")
    demo.add_argument("--pi", type=float, default=None,
                      help=f"MARS relaxation prior, as for 'tnmars fit' (default: {dflt['pi']})")
    demo.add_argument("--alpha", type=float, default=None,
                      help="initial mask logit mean of the MARS relaxation, as for 'tnmars fit'")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data and of the fit (default: 0)")
    demo.add_argument("--backend", choices=("numpy", "torch", "cupy"), default="numpy",
                      help="array library to train with (default: numpy)")
    demo.add_argument("--out", "-o", default=None, metavar="FILE", help="also save the fit result there")
    demo.add_argument("--force", action="store_true", help="replace --out's file and --plot's images if they exist")
    demo.add_argument("--plot", default=None, metavar="DIR",
                      help="also write masks.png (mask probabilities) and training.png (loss and ranks) to DIR")
    demo.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    # ---- info
    info = sub.add_parser(
        "info",
        help="describe a saved network or fit result",
        description="Check a file written by tnmars.save or 'tnmars fit' (its SHA-256 integrity check "
                    "included) and describe what it holds.",
    )
    info.add_argument("file", metavar="FILE", help="a .npz or .safetensors file written by tnmars")
    info.add_argument("--json", action="store_true", help="print the verified metadata as JSON")

    # ---- build-native
    native = sub.add_parser(
        "build-native",
        help="compile the optional native ops of the MARS training step (PyTorch, CPU)",
        description="Compile tnmars.nn's compiled mask draw and prior push (a C++ compiler and ninja; about "
                    "30 s, once per torch version) into the cache directory; every later process uses them. "
                    "They give the same results as the Python path, about 0.1 ms less per training step. "
                    "TNMARS_NATIVE=0 turns them off.",
    )
    native.add_argument("--verbose-build", action="store_true", help="show the compiler's output")
    return parser


# ------------------------------------------------------------------------------ helpers
def _load_array(path_text: str, key: str | None, what: str, option: str = "--key",
                fallback: str | None = None) -> tuple[np.ndarray, str]:
    """The array of a .npy file, or the one named ``key`` (``option`` on the command line) in a
    .npz file; without ``key``, ``fallback`` when the file has it, else the file's only array.
    Returns it with the words for where it came from (``array 'x' of data.npz``), for messages."""
    path = Path(path_text)
    if not path.exists():
        raise CLIError(f"{what} file not found: {path_text}")
    if path.is_dir():
        raise CLIError(f"{what} path is a folder, not a .npy/.npz file: {path_text}")
    if not path.is_file():  # checked before opening: a FIFO without a writer blocks open() forever
        raise CLIError(f"{what} is not a regular file (a pipe, socket or device): {path_text}; save the array "
                       "to a .npy file first")
    suffix = path.suffix.lower()
    if suffix == ".safetensors" and _safetensors_of_tnmars(path):
        raise _tnmars_file_error(what, path_text)
    if suffix not in (".npy", ".npz"):
        raise CLIError(f"{what} must be a .npy or .npz file; got {path.name!r}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise CLIError(f"{what} file {path_text} is not a NumPy array file (or holds pickled Python "
                           "objects, which tnmars never loads)") from None
        raise CLIError(f"cannot read {what} file {path_text}: {err}") from None
    except Exception as err:  # zip, header and OS errors of every kind
        raise CLIError(f"cannot read {what} file {path_text}: {err}") from None
    if isinstance(loaded, np.ndarray):
        if key is not None:  # a .npy file holds one array: no name to choose
            raise CLIError(f"{option} {key!r} names an array of a .npz file, but {path_text} is a .npy file (one "
                           f"array); drop {option}")
        return loaded, path_text
    with loaded:
        names = list(loaded.files)
        if META_KEY in names and key in (None, META_KEY):  # (--key naming a core reads that array)
            raise _tnmars_file_error(what, path_text)
        if key is None:
            if fallback is not None and fallback in names:
                key = fallback
            elif not names:
                raise CLIError(f"{what} file {path_text} holds no arrays (an empty .npz archive)")
            elif len(names) != 1:
                raise CLIError(f"{what} file {path_text} holds several arrays {names}; choose one with {option}")
            else:
                key = names[0]
        if key not in names:
            raise CLIError(f"{what} file {path_text} has no array {key!r}; it has {names}")
        try:
            return loaded[key], f"array {key!r} of {path_text}"
        except Exception as err:
            raise CLIError(f"cannot read array {key!r} of {path_text}: {err}") from None


def _tnmars_file_error(what: str, path_text: str) -> CLIError:
    """A file written by tnmars.save given where data was meant (``tnmars fit model.fit.npz``)."""
    return CLIError(f"{what} file {path_text} is a tnmars file (a network or fit result written by tnmars.save "
                    f"or 'tnmars fit'), not data; describe it with 'tnmars info {shlex.quote(path_text)}', "
                    "or load it in Python with tnmars.load")


def _safetensors_of_tnmars(path: Path) -> bool:
    """Whether a .safetensors file carries tnmars's metadata (its JSON header read, bounded;
    any doubt is a no: the caller's own message follows)."""
    try:
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            if not 0 < size <= 100_000_000:
                return False
            header = json.loads(fh.read(size))
        return isinstance(header, dict) and META_KEY in (header.get("__metadata__") or {})
    except (OSError, ValueError, TypeError, RecursionError):
        return False


def _parse_ranks(text: str | None, option: str = "--max-rank", least: int = 1) -> int | tuple[int, ...] | None:
    """One rank for every bond, or one per bond separated by commas (each at least ``least``)."""
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in str(text).replace(" ", "").split(",") if v != "")
    except ValueError:
        raise CLIError(f"{option} must be an integer or integers separated by commas; got {text!r}") from None
    if not values:
        raise CLIError(f"{option} needs a rank, or ranks separated by commas; got {text!r}")
    if any(v < least for v in values):
        raise CLIError(f"{option} must be {'positive' if least == 1 else f'at least {least}'}; got {text!r}")
    return values[0] if len(values) == 1 else values


def _nonempty(text: str | None, option: str, what: str) -> str | None:
    """``text``, unless the user gave an empty one (``-o ''``): refused, not read as unset."""
    if text is not None and not text.strip():
        raise CLIError(f"{option} is empty; give {what}")
    return text


def _check_suffix(out: Path, option: str = "--out") -> None:
    """The suffixes tnmars.save writes, in any case (``o.NPZ`` too, as save accepts it)."""
    if out.suffix.lower() not in (".npz", ".safetensors"):
        raise CLIError(f"{option} must end in .npz or .safetensors; got {out.name!r}")


def _check_writable(folder: Path, what: str) -> None:
    """Create and remove a trial file in ``folder``: the one reliable test (``os.access``
    says yes to root on a read-only mount or in /proc), run before the fit, not after it."""
    try:
        fd, name = tempfile.mkstemp(prefix=".tnmars-write-test.", dir=folder)
    except OSError as err:
        raise CLIError(f"{what}: cannot write in folder {folder} ({err.strerror or err}); choose a folder "
                       "you can write to") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)


def _check_out(out: Path, inputs: list[str | None], what: str | None = None, force: bool = False) -> None:
    """Refuse an output path before the fit runs, not after it: a missing or unwritable
    folder, a folder where a file name was meant, one of the input files (which the result
    would overwrite), or, without ``force``, any existing file (an outside probe: a second fit
    of the same data replaced the first's result, and ``--out`` replaced an unrelated archive,
    without a word). ``what`` names the path in messages (default: ``--out PATH``)."""
    from .io import write_target

    what = what or f"--out {out}"
    if not out.parent.exists():
        raise CLIError(f"{what}: folder does not exist: {out.parent}")
    if out.is_dir():
        raise CLIError(f"{what} is a folder; give a file name in it ending in .npz or .safetensors")
    for given in inputs:
        if given is not None and out.exists() and out.resolve() == Path(given).resolve():
            raise CLIError(f"{what} is an input file of this run; the result would overwrite it")
    if (out.exists() or out.is_symlink()) and not force:
        advice = "pass --force to replace it" if "choose another" in what else \
            "choose another file, or pass --force to replace it"
        raise CLIError(f"{what} exists; {advice}")
    _check_writable(write_target(out).parent, what)  # (save may write through a link to its target)


#: the images ``--plot DIR`` writes
PLOT_FILES = ("masks.png", "training.png")


def _check_plot_folder(text: str, force: bool = False) -> None:
    """``--plot DIR``: a folder, or one that can be created, where files can be written, and,
    without ``force``, without the images it would replace (as ``--out`` refuses its file)."""
    folder = Path(text)
    if folder.exists() and not folder.is_dir():
        raise CLIError(f"--plot {text} is a file; give a folder (it gets masks.png and training.png)")
    present = [name for name in PLOT_FILES if (folder / name).exists() or (folder / name).is_symlink()]
    if present and not force:
        raise CLIError(f"--plot {text} already holds {' and '.join(present)}; choose another folder, or pass "
                       "--force to replace them")
    existing = folder
    while not existing.exists():  # the folder is created later: its nearest existing parent must allow it
        existing = existing.parent
    if not existing.is_dir():
        raise CLIError(f"--plot {text}: {existing} is a file, so the folder cannot be created")
    _check_writable(existing, f"--plot {text}")


def _network_arg(fmt: str, shape: tuple[int, ...], max_rank: Any, backend: str, device: str | None):
    """A format name stays a name; anything else must be a spec matching the data: without
    ``--max-rank`` the spec itself (the library's default caps), with it a Network at those ranks."""
    from .network import Network
    from .spec import parse_spec

    if fmt.lower() in FORMATS:
        if isinstance(max_rank, tuple):  # (checked here, before the fit's header is printed)
            from .network import cp_spec, tr_spec, tt_spec, tucker_spec

            spec = {"cp": cp_spec, "tucker": tucker_spec, "tt": tt_spec, "tr": tr_spec}[fmt.lower()](len(shape))
            bonds = list(parse_spec(spec).bonds)
            if len(max_rank) != len(bonds):
                raise CLIError(f"--max-rank needs one value per bond of the {fmt.lower()} format of {len(shape)} "
                               f"modes ({len(bonds)}: {', '.join(bonds)}); got {len(max_rank)}")
        return fmt.lower()
    if "," not in fmt and "->" not in fmt:  # one term is one core, no bond: a misspelt name
        close = difflib.get_close_matches(fmt.lower(), FORMATS, n=1)
        if not close and fmt.isalpha() and len(fmt) == len(shape) and len(set(fmt)) == len(fmt):
            raise CLIError(f"the spec {fmt!r} is a single core holding every mode: no bond, so no rank to select; "
                           f"use one of {', '.join(FORMATS)} or an einsum spec with one term per core, such as "
                           "'aA,AbB,Bc'")
        raise CLIError(f"unknown format {fmt!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                       + f"; use one of {', '.join(FORMATS)} or an einsum spec with one term per core, "
                       "such as 'aA,AbB,Bc'")
    try:
        parsed = parse_spec(fmt)
    except (ValueError, TypeError) as err:
        raise CLIError(f"--format {fmt!r} is neither tucker, cp, tt, tr nor a valid einsum spec: {err}") from None
    if len(parsed.output) != len(shape):
        raise CLIError(
            f"spec {parsed.spec!r} has {len(parsed.output)} open modes but the data has {len(shape)} "
            f"(shape {shape})"
        )
    if not parsed.bonds:
        raise CLIError(f"spec {parsed.spec!r} has no bonds, so there is no rank to select")
    if max_rank is None:  # the library's default caps, as tnmars.fit(data, spec) has them (an outside
        return fmt            # review: the CLI required --max-rank where the library does not)
    if isinstance(max_rank, tuple):
        if len(max_rank) != len(parsed.bonds):
            raise CLIError(f"--max-rank gives {len(max_rank)} ranks but spec {parsed.spec!r} has "
                           f"{len(parsed.bonds)} bonds {list(parsed.bonds)}")
        ranks: Any = dict(zip(parsed.bonds, max_rank))
    else:
        ranks = max_rank
    return Network(fmt, shape=shape, ranks=ranks, seed=0)


def _fmt_ranks(bonds: Sequence[str], ranks: Sequence[int], max_ranks: Sequence[int] | None = None) -> str:
    if max_ranks is None:
        return ", ".join(f"{b}={r}" for b, r in zip(bonds, ranks))
    return ", ".join(f"{b}={r}/{m}" for b, r, m in zip(bonds, ranks, max_ranks))


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(n) for n in shape)


def _report(result: Any, out: Any) -> None:
    print(f"  selected ranks  {_fmt_ranks(result.bonds, result.ranks, result.max_ranks)}", file=out)
    line = f"  relative error  {result.relative_error:.4g} on observed entries"
    if getattr(result, "heldout_error", None) is not None:
        line += f", {result.heldout_error:.4g} on held-out entries"
    print(line, file=out)
    net = result.network
    print(f"  compression     {_compression(net)}", file=out)
    from .fitting.result import centring_text, cross_validation_text

    checked = cross_validation_text(getattr(result, "settings", None), warned=bool(getattr(result, "diagnostics", None)))
    if checked:  # (what to expect at the missing entries: the fit's own error cannot say)
        print(f"  cross-validated {checked}", file=out)
    centred = centring_text(getattr(result, "settings", None))
    if centred:
        print(f"  centred         {centred}", file=out)
    if result.interrupted:
        print("  interrupted     yes: the best state reached before Ctrl-C was kept", file=out)


# ------------------------------------------------------------------------------ commands
def _fit_options(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The fit keywords the user set (unset ones keep tnmars.fit's defaults); the MARS
    relaxation's options travel together as one ``relaxation`` dict."""
    options = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    relax = {n: getattr(args, n) for n in ("pi", "alpha", "steps", "lr") if getattr(args, n, None) is not None}
    if relax:
        options["relaxation"] = relax
    return options


def _cmd_fit(args: argparse.Namespace) -> int:
    from . import save
    from .fitting import fit


    if args.observed_key is not None and args.observed is None:
        raise CLIError("--observed-key names the array of an --observed MASK file; there is no --observed")
    data, _ = _load_array(args.data, args.key, "DATA")
    if data.dtype.kind not in "biuf":
        raise CLIError(f"DATA must hold real numbers; got dtype {data.dtype}")
    observed = None
    bad = int(data.size - np.isfinite(data).sum()) if data.dtype.kind == "f" else 0
    if args.observed is not None:
        observed, source = _load_array(args.observed, args.observed_key, "--observed", option="--observed-key",
                                       fallback=args.key)
        if observed.shape != data.shape:
            raise CLIError(f"--observed has shape {_shape_text(observed.shape)} but DATA has {_shape_text(data.shape)}")
        if observed.dtype != bool:
            if not np.isin(observed, (0, 1)).all():
                hint = (f" (read by --key's name {args.key!r}; name the mask's array with --observed-key)"
                        if args.observed_key is None and source.startswith(f"array {args.key!r} of") else "")
                raise CLIError(f"--observed must be a boolean mask (True / 1 where an entry is observed); {source} "
                               f"holds other values{hint}")
            observed = observed.astype(bool)
        if bad and args.nan_as_missing:  # both: the entries observed in the mask and finite
            observed = observed & np.isfinite(data)
        elif bad and not (~np.isfinite(data) <= ~observed).all():
            raise CLIError("DATA has NaN/Inf entries where --observed marks them observed; add --nan-as-missing "
                           "to treat them as missing, or fix the mask")
    elif bad and args.nan_as_missing:
        observed = np.isfinite(data)
    elif bad:
        raise CLIError(f"DATA has {bad:,} NaN/Inf entries; mark them missing with --nan-as-missing, or give "
                       "--observed MASK (True where an entry is observed)")
    if data.ndim == 0:  # (before the header, which read "(, 1 entries")
        raise CLIError("DATA holds a single number (a 0-d array); give an array with at least one mode")
    max_rank = _parse_ranks(args.max_rank)
    min_rank = _parse_ranks(args.min_rank, "--min-rank", least=0)
    network = _network_arg(args.format, tuple(data.shape), max_rank, args.backend, args.device)
    if _nonempty(args.out, "--out", "a file name ending in .npz or .safetensors") is not None:
        out, what = Path(args.out), None
        _check_suffix(out)
    else:
        out = Path(args.data).with_suffix("").with_name(Path(args.data).stem + ".fit.npz")
        what = f"the output file {out} (DATA's name with .fit.npz; choose another with --out)"
    _check_out(out, [args.data, args.observed], what, args.force)
    n_obs = int(observed.sum()) if observed is not None else data.size
    print(f"tnmars fit: {args.data} ({_shape_text(data.shape)}, {data.size:,} entries, {n_obs:,} observed)")
    options = _fit_options(args, ("prior", "prior_strength", "proposal", "dtype", "device"))
    if min_rank is not None:
        options["min_rank"] = min_rank
    result = fit(
        data, network, max_rank=max_rank if isinstance(network, str) else None, observed=observed,
        seed=args.seed, backend=args.backend, progress=False if args.quiet else None, **options,
    )
    _check_finite(result)
    # saved before anything is printed: a reader that closes stdout early (``| head``) ends the
    # command at the next print, which must not throw the finished fit away
    with _deferred_interrupts() as pending:  # a Ctrl-C now must not leave half a file
        path = save(result, out)
    args.saved = path  # (told on stderr if stdout cannot be written)
    fmt = result.settings.get("format") if hasattr(result, "settings") else None
    spec = result.network.spec
    # a format's name after its spec ("(tt)"); a spec given as the format is not printed twice
    named = isinstance(fmt, str) and fmt != spec and "," not in fmt and "->" not in fmt
    print(f"  network         {spec}" + (f" ({fmt})" if named else ""))
    _report(result, sys.stdout)
    print(f"  saved           {path}")
    if pending:
        print("tnmars fit: interrupted (after the result was saved)", file=sys.stderr)
        return 130
    return 0


def _check_finite(result: Any) -> None:
    """A fit whose error is NaN or Inf is a failure, never a result to print and save."""
    for name in ("relative_error", "heldout_error"):
        value = getattr(result, name, None)
        if value is not None and not math.isfinite(value):
            raise FitFailed(f"the fit failed: its {name.replace('_', ' ')} is {value}; nothing was saved "
                            "(check the data's scale and finiteness, or rerun with --traceback and report it)")


@contextlib.contextmanager
def _deferred_interrupts() -> Iterator[list[int]]:
    """Hold Ctrl-C back for the body (e.g. while a file is written); the list says whether
    one arrived. Only the main thread can own signal handlers: elsewhere nothing is held."""
    pending: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield pending
    finally:
        signal.signal(signal.SIGINT, previous)


def _demo_truth(fmt: str, seed: int):
    """A synthetic network of known ranks in ``fmt``: (network, true ranks, maximal rank)."""
    from .network import Network

    if fmt == "tucker":
        true, max_rank = (2, 3, 4, 5), 8
        net = Network.tucker((8, 8, 8, 8), true, seed=seed)
    elif fmt == "cp":
        true, max_rank = (4,), 10
        net = Network.cp((12, 12, 12), true[0], seed=seed)
    elif fmt == "tt":
        true, max_rank = (2, 4, 3), 8
        net = Network.tt((8, 8, 8, 8), true, seed=seed)
    else:
        true, max_rank = (2, 3, 4, 3), 6
        net = Network.tr((8, 8, 8, 8), true, seed=seed)
    return net, true, max_rank


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import save
    from .fitting import fit

    if not (math.isfinite(args.noise) and args.noise >= 0):
        raise CLIError(f"--noise must be a finite number >= 0 (relative to the signal: 0.01 is 1%); got {args.noise}")
    if _nonempty(args.out, "--out", "a file name ending in .npz or .safetensors") is not None:
        out = Path(args.out)  # checked before the fit, not after it
        _check_suffix(out)
        _check_out(out, [], force=args.force)
    if _nonempty(args.plot, "--plot", "a folder (it gets masks.png and training.png)") is not None:
        _check_plot_folder(args.plot, args.force)
    truth, true_ranks, max_rank = _demo_truth(args.format, args.seed)
    clean = truth.to_tensor()
    rng = np.random.default_rng(args.seed + 1000)
    rms = float(np.sqrt(np.mean(clean**2)))
    with np.errstate(over="ignore"):
        data = clean + args.noise * rms * rng.standard_normal(clean.shape)
    if not np.isfinite(data).all():
        raise CLIError(f"--noise {args.noise:g} is too large: the noisy data overflow to Inf; give a level "
                       "relative to the signal, such as 0.01 (1: noise as strong as the signal)")
    noise_floor = float(np.linalg.norm(data - clean) / np.linalg.norm(data))
    print(f"tnmars demo: {_FORMAT_NAMES[args.format]} fit of a synthetic {_shape_text(truth.shape)} tensor "
          f"({truth.dense_size:,} entries)")
    print(f"  true ranks      {_fmt_ranks(truth.bonds, true_ranks)}, plus Gaussian noise at "
          f"{100 * args.noise:g}% of the signal's RMS")
    prior = args.prior or _fit_defaults()["prior"]
    how = ("adds and removes rank indices under the Occam (BIC) criterion" if prior == "bic"
           else "learns MARS masks (the paper's relaxation)")
    print(f"  selection       any rank up to {max_rank} per bond; tnmars {how}")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clipped maximal ranks are expected here
        options = _fit_options(args, ("prior", "proposal"))
        result = fit(data, args.format, max_rank=max_rank, seed=args.seed, backend=args.backend,
                     progress=False if args.quiet else None, **options)
    seconds = time.perf_counter() - t0
    _check_finite(result)
    saved = None
    if args.out is not None:  # (before printing: a closed stdout must not lose the file)
        with _deferred_interrupts() as pending:
            saved = args.saved = save(result, args.out)
        if pending:
            raise KeyboardInterrupt
    estimate = np.asarray(result.network.backend_impl.to_numpy(result.network.to_tensor()))
    truth_error = float(np.linalg.norm(estimate - clean) / np.linalg.norm(clean))
    exact = tuple(result.ranks) == tuple(true_ranks)
    print(f"  selected ranks  {_fmt_ranks(result.bonds, result.ranks, result.max_ranks)}"
          f"  ({'exactly the true ranks' if exact else f'true: {tuple(true_ranks)}'})")
    print(f"  relative error  {result.relative_error:.4f} against the noisy data (the noise alone: {noise_floor:.4f})")
    print(f"  error vs truth  {truth_error:.4f} against the noiseless tensor")
    net = result.network
    print(f"  compression     {_compression(net)}")
    if result.interrupted:
        print("  interrupted     yes: the best state reached before Ctrl-C was kept")
    how = [f"{result.steps_run} MARS relaxation steps"] if result.steps_run else []
    if result.evaluations:
        how.append(f"{result.evaluations} least-squares refits of the {result.criterion} search "
                   f"from the {result.proposal} proposal")
    print(f"  time            {seconds:.1f} s ({', '.join(how) or 'no search'}, {args.backend} backend)")
    for message in result.diagnostics:  # (the fit's own findings: the warnings silenced above are setup's)
        print(f"  WARNING         {as_option_words(message)}")
    if saved is not None:
        print(f"  saved           {saved}")
    if args.plot is not None:
        from .plots import plot_mask_probabilities, plot_training

        folder = Path(args.plot)
        folder.mkdir(parents=True, exist_ok=True)
        plot_mask_probabilities(result, title="selected masks", path=folder / "masks.png")
        phases = " and ".join(dict.fromkeys(p for p in result.history.get("phase", ()) if p in ("relaxation", "selection")))
        plot_training(result, title=phases or "the fit", path=folder / "training.png")
        print(f"  plots           {folder / 'masks.png'}, {folder / 'training.png'}")
    return 0


def _compression(net: Any) -> str:
    """``12.5x (432 parameters for 5,400 entries)``; a zero network says so."""
    from .network import compression_text

    text = compression_text(net)
    if not text.startswith("compression "):
        return f"none: {text}"
    return f"{net.compression:.1f}x ({net.num_params:,} parameters for {net.dense_size:,} entries)"


def _cmd_info(args: argparse.Namespace) -> int:
    from .io import KEY_ENV, _load
    from .network import compression_text

    path = Path(args.file)
    if not path.exists():
        raise CLIError(f"file not found: {args.file}")
    obj, meta = _load(path, "numpy", None, None, None, None)  # one bounded, verified read
    if args.json:
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0
    kind = meta["kind"]
    net = obj if kind == "network" else obj.network
    if meta["integrity"] == "hmac-sha256":
        check = f"HMAC-SHA256 verified with the key in {KEY_ENV}"
    elif "hmac_sha256" in meta:
        check = f"SHA-256 verified; signed, but not authenticated: set {KEY_ENV} to check the signature"
    else:
        check = "SHA-256 verified: detects corruption, not deliberate changes (the file is not signed)"
    print(f"{path}: tnmars {kind.replace('_', ' ')} (file format {meta['format_version']}, "
          f"written by tnmars {meta['tnmars_version']})")
    print(f"  integrity       {check}")
    print(f"  network         {net.spec}")
    print(f"  saved from      {meta['backend']} backend, {meta['dtype']}, device {meta['device']}")
    print(f"  shape           {_shape_text(net.shape)}")
    print(f"  bonds           {_fmt_ranks(list(net.bonds), net.ranks) or '(none)'}")
    print(f"  parameters      {net.num_params:,} for {net.dense_size:,} dense entries "
          f"({compression_text(net)})")
    if kind == "fit_result":
        bonds = getattr(obj, "bonds", tuple(net.bonds))
        max_ranks = getattr(obj, "max_ranks", None)
        print(f"  selected ranks  {_fmt_ranks(bonds, obj.ranks, max_ranks)}")
        line = f"  relative error  {obj.relative_error:.4g} on observed entries"
        if getattr(obj, "heldout_error", None) is not None:
            line += f", {obj.heldout_error:.4g} held out"
        print(line)
        settings = getattr(obj, "settings", {}) or {}
        shown = {k: settings[k] for k in ("format", "prior", "proposal", "seed") if k in settings}
        if shown:
            print("  settings        " + ", ".join(f"{k}={v}" for k, v in shown.items()))
        from .fitting.result import centring_text

        centred = centring_text(settings)
        if centred:
            print(f"  centred         {centred}")
        if getattr(obj, "interrupted", False):
            print("  interrupted     yes (Ctrl-C; the best state so far was kept)")
        for message in getattr(obj, "diagnostics", None) or ():  # (stored in the library's words: said in the
            print(f"  WARNING         {as_option_words(message)}")  # options typed here, as tnmars fit says them)
    return 0


def _cmd_build_native(args: argparse.Namespace) -> int:
    from .nn import native  # (imports torch: only this command needs it)

    try:
        native.build(verbose=args.verbose_build)
    except RuntimeError as err:
        raise CLIError(str(err)) from err
    state = native.status()
    where = native.library_path()
    print(f"built: {where}; not used while TNMARS_NATIVE=0" if state.startswith("turned off") else
          f"built and used by every process from now on: {where}")
    return 0


_COMMANDS = {"fit": _cmd_fit, "demo": _cmd_demo, "info": _cmd_info, "build-native": _cmd_build_native}


class _OutputGuard:
    """stdout for a command, so that no failure to write it loses the command's work. When the
    reader closes it early (``tnmars fit ... | head``) the rest of the output goes nowhere and
    the exit status is 141, silently, as for Unix tools killed by SIGPIPE. When it cannot be
    written at all (closed: ``tnmars info F >&-``; a full disk: ``> /dev/full``; an I/O error)
    the rest goes nowhere too and the command ends with one line on stderr and status 1 (a
    usage error is 2; that was the status here, and a closed stdout was an "internal error").
    Either way the command finishes its work first: a fit is still saved."""

    def __init__(self, stream: Any) -> None:
        self.broken = False
        #: why the output could not be written (None while it can)
        self.failed: str | None = None
        if stream is None:  # started with stdout closed: Python then sets sys.stdout to None
            self.failed = "standard output is closed"
            # (opened here, /dev/null takes descriptor 1, which no file the command opens may take)
            stream = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        self.stream = stream

    def write(self, text: str) -> int:
        if not self.broken and self.failed is None:
            try:
                return self.stream.write(text)
            except BrokenPipeError:
                self._close()
            except (OSError, ValueError) as err:  # (ValueError: a closed file object)
                self._fail(err)
        return len(text)

    def flush(self) -> None:
        if not self.broken and self.failed is None:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._close()
            except (OSError, ValueError) as err:
                self._fail(err)

    def _close(self) -> None:
        self.broken = True
        _quiet_stdout()

    def _fail(self, err: Exception) -> None:
        self.failed = getattr(err, "strerror", None) or str(err) or type(err).__name__
        _quiet_stdout()  # (the unwritten rest of the buffer goes there at exit, not to a traceback)

    def status(self, code: int, command: str, saved: Any = None) -> int:
        """The exit status after a command that returned ``code``, the output's fate told."""
        if self.broken:
            return 141
        if self.failed is None:
            return code
        with contextlib.suppress(Exception):
            kept = f"; the result was saved to {saved}" if saved is not None else ""
            print(f"{command}: error: cannot write the output to stdout ({self.failed}){kept}", file=sys.stderr)
        return code or 1

    def __getattr__(self, name: str) -> Any:  # (isatty, fileno, encoding ... of the real stream)
        return getattr(self.stream, name)


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush is quiet."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _interrupted() -> int:
    """Ctrl-C outside a fit: one line, status 130, and no second Ctrl-C can raise a traceback."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(Exception):
        print("tnmars: interrupted", file=sys.stderr)
    return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tnmars`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    ``main(["demo", "--quiet"])`` is what ``tnmars demo --quiet`` runs: 0 on success, 1 for a
    failed fit, an internal error or output that could not be written (stdout closed, a full
    disk), 2 for a usage or input error (reported as one line on stderr), 130 on Ctrl-C
    outside a fit, 141 when the reader closed stdout early (a broken pipe).
    """
    try:
        return _run(argv)
    except KeyboardInterrupt:
        return _interrupted()


#: the library's keyword spellings in its messages, and what a ``tnmars fit`` user types instead
_OPTION_WORDS = (
    (re.compile(r"\bobserved=False\b"), "False in the --observed mask"),
    (re.compile(r"\bprior=['\"](\w+)['\"]"), r"--prior \1"),
    (re.compile(r"\b(max|min)_rank=\.\.\."), r"--\1-rank R"),
    (re.compile(r"\b(max|min)_rank=(?=[\w(])"), r"--\1-rank "),
    (re.compile(r"\b(max|min)_rank=?(?![\w(])"), r"--\1-rank"),
    (re.compile(r"\bprior_strength=?(?![\w(])"), "--prior-strength"),
)


def as_option_words(message: str) -> str:
    """A library message in the command line's words: ``max_rank=4`` reads ``--max-rank 4``,
    ``min_rank=...`` ``--min-rank R``, so that the advice names options the user can type.

    >>> as_option_words("Raise max_rank to let the data choose (max_rank=... with min_rank=...).")
    'Raise --max-rank to let the data choose (--max-rank R with --min-rank R).'
    >>> as_option_words("set observed=False there; prior='bernoulli' runs no search")
    'set False in the --observed mask there; --prior bernoulli runs no search'
    """
    for pattern, words in _OPTION_WORDS:
        message = pattern.sub(words, message)
    return message


@contextlib.contextmanager
def _one_line_warnings(translate: bool = False):
    """Warnings as one line each, ``tnmars: RuntimeWarning: ...``: Python's default format adds
    the file and line of library code and that line's source, which mean nothing to a command
    line user. With ``translate`` (``tnmars fit``) in the options' words (:func:`as_option_words`)."""
    words = as_option_words if translate else str
    previous = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *_, **__: f"tnmars: {category.__name__}: {words(str(message))}\n"
    try:
        yield
    finally:
        warnings.formatwarning = previous


def _run(argv: Sequence[str] | None) -> int:
    stdout = sys.stdout
    guard = sys.stdout = _OutputGuard(stdout)
    try:
        return _run_guarded(argv, guard)
    finally:
        sys.stdout = stdout


def _run_guarded(argv: Sequence[str] | None, guard: _OutputGuard) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help and --version print to stdout too (usage errors: stderr)
        guard.flush()
        if done.code in (0, None) and (guard.broken or guard.failed):
            return guard.status(0, "tnmars")
        raise
    if args.command is None:  # a usage error: the help goes to stderr
        parser.print_help(sys.stderr)
        return 2
    if args.verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger = logging.getLogger("tnmars")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        with _one_line_warnings(translate=args.command == "fit"):
            code = _COMMANDS[args.command](args)
        guard.flush()  # a closed pipe or a full disk shows up here at the latest
        return guard.status(code, f"tnmars {args.command}", getattr(args, "saved", None))
    except KeyboardInterrupt:
        return _interrupted()
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    except Exception as err:  # every failure becomes one readable line (or, --traceback, the traceback)
        if isinstance(err, CLIError):
            message, code = str(err), 2
        elif isinstance(err, FitFailed):
            message, code = str(err), 1
        elif isinstance(err, MemoryError):
            message, code = f"out of memory ({err or 'MemoryError'}); use smaller ranks or data", 1
        elif isinstance(err, (ValueError, TypeError, OSError, ImportError)):
            message, code = str(err) or type(err).__name__, 2
            if args.command == "fit" and not isinstance(err, OSError):  # (a path may hold such words)
                message = as_option_words(message)
        else:
            message, code = None, 1
        if args.traceback:  # the same exit status as without it
            traceback.print_exc(file=sys.stderr)
            return code
        if message is None:
            print(f"tnmars {args.command}: internal error: {type(err).__name__}: {err} "
                  "(rerun with --traceback and report it)", file=sys.stderr)
            return 1
        print(f"tnmars {args.command}: error: {' '.join(message.split())}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
