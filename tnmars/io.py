"""Saving and loading networks and fit results without ever executing code on load.

A file holds plain numeric arrays plus one JSON document of metadata. Two containers are
supported, chosen by the file extension:

* ``.npz`` (the default; NumPy's zip of ``.npy`` arrays), read with ``allow_pickle=False``;
* ``.safetensors`` (the Hugging Face format: a JSON header and raw little-endian buffers).

Neither can run code when loaded, unlike ``pickle`` / ``torch.save``. The metadata records
the spec, index sizes, backend, dtype, device, the file-format version and the tnmars
version, and for a fit result its ranks, mask probabilities, history and errors. It also
stores a SHA-256 digest of the metadata and every array's bytes, so a truncated or
tampered file is refused with a :class:`FileFormatError` (a ``ValueError``) naming the
problem instead of producing a silently wrong network.

>>> import tempfile, os, tnmars
>>> net = tnmars.Network.tt((4, 5, 6), 3, seed=0)
>>> path = os.path.join(tempfile.mkdtemp(), "net.npz")
>>> _ = tnmars.save(net, path)
>>> back = tnmars.load(path)
>>> back.spec == net.spec and bool((back.to_tensor() == net.to_tensor()).all())
True
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import _schema
from ._container import (
    ALLOWED_KINDS,
    META_KEY,
    ArrayEntry,
    Digest,
    FileFormatError,
    open_container,
    parse_json,
    safetensors_module,
    signatures,
    write_atomic,
)
from .backends import get_backend
from .network import Network, _device_name, _dtype_name, check_dtype_conversion, check_narrowing, narrows

__all__ = ["save", "load", "read_metadata", "FileFormatError", "FORMAT_VERSION", "KEY_ENV"]

#: version of the on-disk layout; bumped when the layout changes incompatibly
FORMAT_VERSION = 1
#: environment variable holding the signing key used when ``key=`` is not given
KEY_ENV = "TNMARS_SIGNING_KEY"
_MAGIC = "tnmars"
_META_KEY = META_KEY
_SUFFIXES = (".npz", ".safetensors")
#: NumPy dtypes the safetensors format has a code for (no complex128, for one)
_SAFETENSORS_DTYPES = frozenset({"bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                                 "float16", "float32", "float64", "complex64"})
_log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ helpers
def _tnmars_version() -> str:
    from . import __version__

    return __version__


def _signing_key(key: Any) -> bytes | None:
    """The HMAC key: ``key`` (bytes or text), else the environment variable, else None."""
    if key is None:
        key = os.environ.get(KEY_ENV) or None
        if key is None:
            return None
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise TypeError(f"key must be bytes or a string; got {type(key).__name__}")
    key = bytes(key)
    if not key:
        raise ValueError("key is empty; give a secret (16 random bytes or more, e.g. os.urandom(32))")
    return key


def _jsonable(value: Any, tuples: bool = False) -> Any:
    """Convert NumPy / torch scalars, arrays, tuples and dataclasses into plain JSON values
    (with ``tuples=True`` a tuple is tagged ``{"__tuple__": [...]}`` so it comes back a tuple, and a
    dict with keys other than strings ``{"__items__": [[key, value], ...]}``, so they come back)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, Mapping):
        if tuples and not all(isinstance(k, str) for k in value):  # (JSON keys are text: {3: ..} came back {"3": ..})
            return {"__items__": [[_jsonable(k, tuples), _jsonable(v, tuples)] for k, v in value.items()]}
        return {str(k): _jsonable(v, tuples) for k, v in value.items()}
    if isinstance(value, tuple) and tuples:
        return {"__tuple__": [_jsonable(v, tuples) for v in value]}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, tuples) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name), tuples) for f in dataclasses.fields(value)}
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # any array or array scalar
        arr = _to_numpy(value)
        return _jsonable(arr.tolist())
    raise TypeError(f"cannot store a {type(value).__name__} in tnmars metadata; use numbers, strings, lists or dicts")


_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _unjson(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__float__"} and value["__float__"] in _FLOATS:
            return _FLOATS[value["__float__"]]
        if set(value) == {"__tuple__"} and isinstance(value["__tuple__"], list):
            return tuple(_unjson(v) for v in value["__tuple__"])
        items = value.get("__items__")
        if len(value) == 1 and isinstance(items, list) and all(isinstance(p, list) and len(p) == 2 for p in items):
            pairs = [(_unjson(k), _unjson(v)) for k, v in items]
            if all(isinstance(k, (str, int, float, bool, tuple)) and _hashable(k) for k, _ in pairs):
                return dict(pairs)
        return {k: _unjson(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unjson(v) for v in value]
    return value


def _hashable(value: Any) -> bool:
    try:
        hash(value)
        return True
    except TypeError:  # (a tuple holding a list, in a file written by hand)
        return False


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    module = type(x).__module__.split(".")[0]
    if module in ("torch", "cupy"):
        be = get_backend(module)
        try:
            return np.asarray(be.to_numpy(x))
        except TypeError:  # e.g. torch.bfloat16 has no NumPy dtype: widen losslessly
            return np.asarray(be.to_numpy(be.asarray(x, dtype="float32")))
    return np.asarray(x)


def _digest(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the metadata (without the digest itself) and every array's name, dtype,
    shape and little-endian bytes, in sorted name order: what a file's ``sha256`` holds."""
    return signatures(meta, arrays, None)[0]


def _is_torch_module(obj: Any) -> bool:
    """A ``torch.nn.Module`` (such as a ``tnmars.nn`` layer, which has ``.network`` and
    ``.ranks`` too), recognised without importing torch."""
    return any(c.__name__ == "Module" and c.__module__ == "torch.nn.modules.module" for c in type(obj).__mro__)


def _is_fit_result(obj: Any) -> bool:
    return isinstance(getattr(obj, "network", None), Network) and hasattr(obj, "ranks") and not _is_torch_module(obj)


def _not_saved(obj: Any) -> str:
    """Why ``save`` refuses ``obj``, and for the results that hold networks what to pass
    instead: a structure search's result (``tnmars.search``) holds a pruned network and a fit,
    a sweep's (``tnmars.sweep``) one result per budget. Neither is saved whole under another
    type's name, since ``load`` could only give back a Network or a FitResult."""
    base = f"tnmars.save stores a Network or a fit result; got {type(obj).__name__}"
    if _is_torch_module(obj):
        network = " (its tensor network alone: tnmars.save(layer.network, path))" \
            if isinstance(getattr(obj, "network", None), Network) else ""
        return (f"{base}, a torch module: save its parameters with torch, torch.save(model.state_dict(), path) "
                "(for a MARS model, after tnmars.nn.compress; read back with tnmars.nn.load_compressed)" + network)
    if isinstance(getattr(obj, "network", None), Network) and _is_fit_result(getattr(obj, "fit", None)):
        return (f"{base}: save its pruned network, tnmars.save(result.network, path), or the fit of its "
                "selection, tnmars.save(result.fit, path)")
    results = getattr(obj, "results", None)
    if isinstance(results, list) and results:
        k = f"k from 0 to {len(results) - 1}" if len(results) > 1 else "k = 0"
        if all(_is_fit_result(r) for r in results):
            return f"{base}: it holds one fit result per budget; save one, tnmars.save(result.results[k], path) ({k})"
        if all(isinstance(getattr(r, "network", None), Network) for r in results):
            return (f"{base}: it holds one result per budget; save one's network, "
                    f"tnmars.save(result.results[k].network, path) ({k})")
    return base


def _fit_result_class() -> type:
    """The one class a fit result is rebuilt as (no class name is ever imported from a file)."""
    import tnmars

    return tnmars.FitResult


# ------------------------------------------------------------------------------ encoding
def _network_payload(net: Network, prefix: str = "core") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if str(net.device).startswith("meta"):  # (torch said only "Cannot copy out of meta tensor")
        raise ValueError("cannot save a network on the 'meta' device: it holds shapes but no values; "
                         "build it on the CPU or a GPU (or give it cores with values: net.with_cores(...)) before saving")
    if net.dtype not in _schema.DTYPES:  # (load would refuse the file: refused here, before writing it)
        if net.dtype.startswith(">") and not np.dtype(net.dtype).isnative:  # (NumPy's name of a swapped dtype)
            native = np.dtype(net.dtype).newbyteorder("=").name
            raise TypeError(f"cannot save {net.dtype} cores: they are big-endian ({native} in the other byte order), "
                            f"and tnmars files hold native little-endian values; convert first: net.to({native!r})")
        raise TypeError(f"cannot save {net.dtype} cores: tnmars files hold {', '.join(sorted(_schema.DTYPES))}; "
                        "convert first, e.g. net.to('float64')")
    labels = _labels_payload(net.labels)
    if net.labels is not None and labels is None:
        # labels other than str and int (tuples, objects) are not JSON: say so rather than hand
        # back, after load, a network whose .labels is silently None
        warnings.warn(
            f"the labels of {net.spec!r} are not saved (files keep int labels and str labels of at most "
            f"{_schema.MAX_LABEL} characters only): after load, "
            ".labels is None; save the label -> symbol map yourself if you need it", stacklevel=4)
    if not isinstance(net.optimize, str):
        warnings.warn(
            f"the contraction optimizer of {net.spec!r} ({type(net.optimize).__name__}) is not saved: after load "
            "it is 'auto' (the values are the same; pass optimize= again if the path matters)", stacklevel=4)
    arrays = {}
    for k, core in enumerate(net.cores):
        arrays[f"{prefix}_{k}"] = np.ascontiguousarray(_to_numpy(core))
    meta = {
        "spec": net.spec,
        "dims": net.dims,
        "backend": net.backend,
        "dtype": net.dtype,
        "device": net.device,
        "optimize": net.optimize if isinstance(net.optimize, str) else "auto",
        "cores": [f"{prefix}_{k}" for k in range(net.num_cores)],
    }
    if labels is not None:
        meta["labels"] = labels
    return meta, arrays


def _labels_payload(labels: Mapping[Any, str] | None) -> list[list[Any]] | None:
    """A network's label -> symbol map as ``[[kind, label, symbol], ...]`` (kind "str" or
    "int", so that 1 and "1" stay apart); None without labels or with any other kind of label
    (or a string longer than the schema keeps)."""
    if labels is None:
        return None
    out = []
    for label, symbol in labels.items():
        if isinstance(label, str) and len(label) <= _schema.MAX_LABEL:
            out.append(["str", label, symbol])
        elif isinstance(label, (int, np.integer)) and not isinstance(label, (bool, np.bool_)):
            out.append(["int", int(label), symbol])
        else:
            return None
    return out


def _fit_payload(result: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    meta, arrays = _network_payload(result.network)
    fit: dict[str, Any] = {}
    probs = getattr(result, "probabilities", None) or {}
    prob_names = {}
    for bond, p in dict(probs).items():
        name = f"prob_{bond}"
        arrays[name] = np.ascontiguousarray(_to_numpy(p), dtype=np.float64).reshape(-1)
        prob_names[bond] = name
    fit["probabilities"] = prob_names
    ranks = result.ranks
    fit["ranks"] = _jsonable(dict(ranks) if isinstance(ranks, Mapping) else list(ranks))
    fit["ranks_type"] = "dict" if isinstance(ranks, Mapping) else "tuple"
    # every other plain field of the result (errors, history, flags, settings)
    fields: dict[str, Any] = {}
    if dataclasses.is_dataclass(result):
        names = [f.name for f in dataclasses.fields(result)]
    else:
        names = [n for n in vars(result) if not n.startswith("_")]
    networks: dict[str, Any] = {}
    for name in names:
        if name in ("network", "probabilities", "ranks"):
            continue
        value = getattr(result, name)
        if isinstance(value, Network):  # e.g. the unpruned network of a fit
            sub_meta, sub_arrays = _network_payload(value, prefix=f"{name}_core")
            networks[name] = sub_meta
            arrays.update(sub_arrays)
            continue
        try:
            fields[name] = _jsonable(value, tuples=True)
        except TypeError:
            if not isinstance(value, Mapping):
                warnings.warn(f"fit-result field {name!r} ({type(value).__name__}) is not saved", stacklevel=3)
                continue
            # a dict (settings, history) keeps what can be stored: one datetime in the settings
            # dropped them all, and load gave {} back (an outside probe)
            kept, dropped = {}, []
            for key, item in value.items():
                try:
                    _jsonable(key, tuples=True)  # (a key that cannot be stored drops its entry too)
                    kept[key] = _jsonable(item, tuples=True)
                except TypeError:
                    dropped.append(f"{key!r} ({type(item).__name__})")
            fields[name] = _jsonable(kept, tuples=True)  # (the keys as above; the values are stored as they are)
            warnings.warn(f"fit-result field {name!r}: {', '.join(dropped)} not saved (files hold numbers, strings, "
                          "lists and dicts); its other entries are", stacklevel=3)
        if isinstance(fields[name], dict) and "__items__" in fields[name]:  # a field's own keys are names
            pairs = fields[name]["__items__"]
            odd = [repr(_unjson(k)) for k, _ in pairs if not isinstance(k, str)]
            warnings.warn(f"fit-result field {name!r}: the keys {', '.join(odd)} are saved as text (its keys are "
                          "names); keys inside its entries keep their type", stacklevel=3)
            fields[name] = {str(_unjson(k)): v for k, v in pairs}
    for extra in ("relative_error", "history", "interrupted"):  # properties of non-dataclass results
        if extra not in fields and hasattr(result, extra):
            try:
                fields[extra] = _jsonable(getattr(result, extra), tuples=True)
            except TypeError:
                pass
    fit["fields"] = fields
    fit["networks"] = networks
    fit["class"] = f"{type(result).__module__}.{type(result).__qualname__}"
    meta["fit"] = fit
    return meta, arrays


# ------------------------------------------------------------------------------ saving
def _save_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a string or a path; got {type(path).__name__}")
    if not os.fspath(path):  # Path("") is the current folder, "." (which would become ".npz")
        raise ValueError("path is empty; give a file name such as 'net.npz'")
    text = os.fsdecode(os.fspath(path))
    if (text.endswith(("/", os.sep)) or (os.altsep and text.endswith(os.altsep))
            or os.path.basename(text) in (".", "..")):  # ("runs/." too; a Path has lost its separator already)
        # (Path drops a trailing separator: "results/" became "results.npz" beside the folder, replacing
        # any file of that name, and the folder stayed empty; an outside probe. Without the separator,
        # "runs" beside a folder "runs" is the file runs.npz, which load("runs") reads)
        raise IsADirectoryError(f"cannot save to {text!r}: it names a folder; give a file name in it, e.g. "
                                f"{str(Path(text) / 'net.npz')!r}")
    path = Path(path)
    if path.name.lower() in _SUFFIXES:  # "dir/.npz": an extension without a name (Path reads it as a hidden
        # file without a suffix, and ".npz.npz" was written)
        raise ValueError(f"{str(path)!r} has an extension but no file name; give one, e.g. "
                         f"{str(path.with_name('net' + path.name))!r}")
    if _no_extension(path):
        return path.with_name(path.name + ".npz")
    if path.suffix.lower() not in _SUFFIXES:
        raise ValueError(
            f"tnmars saves .npz or .safetensors files; {str(path)!r} ends in {path.suffix!r}"
            + (" (tnmars never writes pickle-based .pt files)" if path.suffix.lower() in (".pt", ".pth", ".pkl") else "")
            + f"; use {path.stem + '.npz'!r} or {path.stem + '.safetensors'!r}"
        )
    return path


def _check_arrays(arrays: Mapping[str, np.ndarray]) -> None:
    for name, arr in arrays.items():
        if arr.dtype.kind not in ALLOWED_KINDS:
            raise TypeError(f"array {name!r} has dtype {arr.dtype}, which tnmars files do not store")
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            raise ValueError(f"array {name!r} holds NaN or Inf entries; tnmars does not save a broken network")


def save(obj: Any, path: str | os.PathLike, *, key: bytes | str | None = None) -> Path:
    """Save a :class:`~tnmars.Network` or a fit result (from :func:`tnmars.fit`) to ``path``.

    The extension picks the container: ``.npz`` (added when the name has no extension) or
    ``.safetensors``; any other extension is a ``ValueError`` (tnmars never writes pickle
    files such as ``.pt``). Cores on any backend or device are copied to host memory; the
    metadata remembers where they came from so :func:`load` can put them back. The file is
    written to a new temporary file in the same folder and then renamed over ``path``, so
    readers see the old file or the complete new one, never a mix. A file replaced keeps its
    permission bits; a symbolic link at ``path`` to a file of the same extension stays a link
    (the file it points to is replaced), a link to anything else is replaced by the new file,
    never written through. An ``OSError`` (an unwritable folder, a full disk) names ``path``.

    Parameters
    ----------
    obj
        A ``Network``, or a :class:`tnmars.FitResult` (another object with ``.network`` and
        ``.ranks`` is saved as one when it has every field of a ``FitResult``, and refused,
        naming the fields it lacks, when not). Cores holding NaN or Inf are refused. The results of
        :func:`tnmars.search` and :func:`tnmars.sweep` are not saved whole (``load`` could not
        give them back): the ``TypeError`` names what to save instead, such as
        ``result.network`` or ``result.fit`` of a search, ``result.results[k]`` of a sweep.
    path
        Destination file. Parent folders must exist.
    key
        A secret (bytes or text) to sign the file with HMAC-SHA256, so that :func:`load`
        with the same key detects any change made by someone without it. Defaults to the
        ``TNMARS_SIGNING_KEY`` environment variable; without either the file carries only
        the unkeyed SHA-256, which detects corruption but not deliberate tampering.

    Returns
    -------
    Path
        The path written (with ``.npz`` appended when no extension was given).

    Examples
    --------
    >>> import tempfile, os, tnmars
    >>> path = tnmars.save(tnmars.Network.cp((3, 4), 2, seed=1), os.path.join(tempfile.mkdtemp(), "cp"))
    >>> path.suffix
    '.npz'
    """
    path = _save_path(path)
    secret = _signing_key(key)
    if isinstance(obj, Network):
        kind = "network"
        meta, arrays = _network_payload(obj)
    elif _is_fit_result(obj):
        kind = "fit_result"
        meta, arrays = _fit_payload(obj)
    else:
        raise TypeError(_not_saved(obj))
    _check_arrays(arrays)
    meta = _jsonable({
        "format": _MAGIC,
        "format_version": FORMAT_VERSION,
        "tnmars_version": _tnmars_version(),
        "kind": kind,
        **meta,
    })
    sha, mac = signatures(meta, arrays, secret)
    if mac is not None:
        meta["hmac_sha256"] = mac
    meta["sha256"] = sha
    _check_loadable(meta, arrays, path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot save to {str(path)!r}: folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"cannot save to {str(path)!r}: it is a folder")
    text = json.dumps(meta)
    if path.suffix.lower() == ".safetensors":
        st_numpy = safetensors_module().numpy
        for name, arr in arrays.items():
            if arr.dtype.name not in _SAFETENSORS_DTYPES:
                raise TypeError(f"array {name!r} has dtype {arr.dtype}, which .safetensors files cannot hold; "
                                "save to a .npz path instead")

        def write(tmp: Path, fh) -> None:
            fh.write(st_numpy.save(arrays, metadata={_META_KEY: text}))
    else:
        blob = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

        def write(tmp: Path, fh) -> None:
            np.savez_compressed(fh, **{_META_KEY: blob}, **arrays)

    write_atomic(write_target(path), write, shown=path)
    _log.info("saved %s %s (%d arrays%s)", kind, path, len(arrays), ", HMAC-signed" if mac else "")
    return path


def _check_loadable(meta: dict[str, Any], arrays: Mapping[str, np.ndarray], path: Path) -> None:
    """Refuse, before writing, what :func:`load` would refuse: a fit result whose fields no
    longer describe its network (``result.network`` replaced by a pruned one, ``ranks`` and
    ``num_params`` left as they were) was written, and the file then never loaded."""
    entries = {name: ArrayEntry(name, arr.dtype, arr.shape, None) for name, arr in arrays.items()}
    fit_class = _fit_result_class() if meta["kind"] == "fit_result" else None
    where = f"{str(path)!r}"
    try:
        _schema.validate(meta, entries, where, fit_class, _unjson)
    except FileFormatError as err:
        detail = str(err).removeprefix(f"{where} has invalid metadata: ")
        hint = ""
        if meta["kind"] == "fit_result":
            fit_class = _fit_result_class()
            if meta["fit"].get("class") == f"{fit_class.__module__}.{fit_class.__qualname__}":
                hint = (" After replacing a fit result's network, update its other fields to match "
                        "(dataclasses.replace(result, network=net, ranks=net.ranks, num_params=net.num_params, ...)), "
                        "or save the network alone.")
            else:  # an object of the user's with .network and .ranks
                hint = (f" A fit result is saved as a {fit_class.__name__}, whose fields it must have; save the "
                        "network alone (tnmars.save(obj.network, path)), or build the result with tnmars.fit.")
        raise ValueError(f"cannot save to {str(path)!r}: load would refuse the file ({detail}).{hint}") from None


def write_target(path: Path) -> Path:
    """The file ``save`` replaces: through a symbolic link, the file it points to when that
    has the same tnmars suffix (the link stays, as the user set it up). Any other link is
    replaced, not written through: a link planted at the destination cannot make ``save``
    overwrite a file it would refuse to write by its own name (such as ``~/.bashrc``)."""
    if not path.is_symlink():
        return path
    target = Path(os.path.realpath(path))
    return target if target.suffix.lower() == path.suffix.lower() else path


# ------------------------------------------------------------------------------ loading
def _no_extension(path: Path) -> bool:
    """Whether a name has no extension of its own: none, or digits after its last dot, as a
    version ("run_v1.5": refused before as a name "ending in '.5'")."""
    return path.suffix == "" or path.suffix[1:].isdigit()


def _as_saved(path: Path) -> Path:
    """``path``, or the ``.npz`` file :func:`save` wrote for it when it has no extension and is
    not a file itself (``save(r, "fit")`` writes ``fit.npz``, and ``save(r, "runs")`` beside a
    folder ``runs`` writes ``runs.npz``; ``load`` reads them back by the same names)."""
    if _no_extension(path) and not path.is_file() and os.fspath(path):
        saved = path.with_name(path.name + ".npz")
        if saved.exists():
            return saved
    return path


def _read(path: Any, key: Any = None, max_bytes: int | None = None):
    """Read, validate and verify a file: ``(metadata, arrays, decoded fit fields)``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a string or a path; got {type(path).__name__}")
    path = _as_saved(Path(path))
    secret = _signing_key(key)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    if path.is_dir():
        raise FileFormatError(f"{str(path)!r} is a folder, not a tnmars file")
    if not path.is_file():  # checked before opening: a FIFO without a writer blocks open() forever
        raise FileFormatError(f"{str(path)!r} is not a regular file (a pipe, socket or device): tnmars reads "
                              "files written by tnmars.save; copy the data to a file first")
    where = f"{str(path)!r}"
    with open_container(path, where, max_bytes) as (raw, entries):
        meta = parse_json(raw, where)
        if not isinstance(meta, dict) or meta.get("format") != _MAGIC:
            raise FileFormatError(f"{where} is not a tnmars file")
        _check_version(meta, where)
        fit_class = _fit_result_class() if meta.get("kind") == "fit_result" else None
        fields = _schema.validate(meta, entries, where, fit_class, _unjson)
        if secret is not None and "hmac_sha256" not in meta:
            given, drop = ("key=", "without key=") if key is not None else \
                (f"in the {KEY_ENV} environment variable", f"with {KEY_ENV} unset")
            raise FileFormatError(f"{where} is not signed, but a key was given ({given}): it cannot be "
                                  f"authenticated; read it {drop} only if you trust where it came from")
        digest = Digest(meta, secret)
        arrays: dict[str, np.ndarray] = {}
        for name in sorted(entries):
            entry = entries[name]
            digest.header(name, entry.dtype, entry.shape)
            arrays[name] = entry.read(digest.update)
    if digest.sha.hexdigest() != meta["sha256"]:
        raise FileFormatError(
            f"{where} failed its integrity check (SHA-256 mismatch): the file was modified or corrupted"
        )
    if digest.mac is not None and not hmac_equal(digest.mac.hexdigest(), meta["hmac_sha256"]):
        raise FileFormatError(
            f"{where} failed its authenticity check (HMAC mismatch): it was modified, or signed with another key"
        )
    for name, arr in arrays.items():
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            raise FileFormatError(f"{where}: array {name!r} holds NaN or Inf entries")
        if name in meta.get("fit", {}).get("probabilities", {}).values() and ((arr < 0) | (arr > 1)).any():
            raise FileFormatError(f"{where}: mask probabilities {name!r} lie outside [0, 1]")
    meta["integrity"] = "hmac-sha256" if digest.mac is not None else "sha256"
    return meta, arrays, fields


def _check_version(meta: Mapping[str, Any], where: str) -> None:
    """Only an integer above :data:`FORMAT_VERSION` is a newer format (upgrading helps); any
    other value (0, "1", 1.0, true, missing) is a broken file."""
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise FileFormatError(f"{where} has an invalid file-format version {repr(version)[:50]} (tnmars writes a "
                              "positive integer): the file is corrupted or was not written by tnmars")
    if version > FORMAT_VERSION:
        raise FileFormatError(
            f"{where} uses file-format version {version}, newer than this tnmars understands "
            f"({FORMAT_VERSION}); upgrade tnmars (file written by tnmars {str(meta.get('tnmars_version'))[:50]})"
        )


def hmac_equal(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a, b)


def read_metadata(path: str | os.PathLike, *, key: bytes | str | None = None,
                  max_bytes: int | None = None) -> dict[str, Any]:
    """The verified JSON metadata of a tnmars file (no arrays are converted to a backend).

    Raises :class:`FileFormatError` if the file is corrupted, as :func:`load` would. Adds
    ``array_shapes`` and ``integrity`` (``"sha256"``, or ``"hmac-sha256"`` when a key
    verified it) to what the file stores. ``key`` and ``max_bytes`` are as for :func:`load`.
    """
    meta, arrays, _ = _read(path, key, max_bytes)
    meta = dict(meta)
    meta["array_shapes"] = {name: list(arr.shape) for name, arr in arrays.items()}
    return meta


def _build_network(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], backend, device, dtype, where) -> Network:
    cores = [arrays[n] for n in meta["cores"]]
    saved_backend = meta["backend"]
    target = backend or saved_backend
    try:
        be = get_backend(target)
    except ImportError:
        if backend is not None:
            raise
        warnings.warn(f"{where} was saved from the {saved_backend} backend, which is not installed; loading into numpy",
                      stacklevel=4)
        be, target = get_backend("numpy"), "numpy"
    if dtype is None:
        dtype = meta["dtype"]
        if be.name in ("numpy", "cupy") and dtype == "bfloat16":
            dtype = None  # a torch bfloat16 file read into NumPy: keep the stored float32
    else:  # the caller's choice: refused here as theirs, not reported as a broken file below
        check_dtype_conversion(_dtype_name(dtype), meta["dtype"])
        if be.name in ("numpy", "cupy") and _dtype_name(dtype) == "bfloat16":
            raise TypeError(f"{be.name} has no bfloat16; load into torch (backend='torch') or choose float32")
    if device is not None:  # as Network.to reads it: 0 is "cuda:0", a torch.device its name
        device = _device_name(device)
    if device is None and backend is None and target != "numpy":
        device = meta["device"]
        try:
            if str(device).split(":")[0] == "meta":  # tensors without values: nothing to load into
                raise ValueError("the meta device holds no values")
            be.check_device(device)
        except ValueError:
            warnings.warn(f"{where} was saved on device {device!r}, which is not available; loading on the CPU",
                          stacklevel=4)
            device = None
    # the dtype as tnmars names it everywhere ("float" is float64: torch alone reads it as float32, and the
    # narrowing check below then never ran; numpy / torch dtype objects for the other backend were refused)
    with np.errstate(over="ignore", invalid="ignore"):  # (an overflowing cast is refused below, in words)
        converted = [be.asarray(c, dtype=None if dtype is None else _dtype_name(dtype), device=device) for c in cores]
    if dtype is not None and narrows(_dtype_name(dtype), meta["dtype"]):  # a narrower dtype may not hold the
        check_narrowing(cores, get_backend("numpy"), converted, be, _dtype_name(dtype))  # saved (finite) cores
    try:
        net = Network(meta["spec"], cores=converted, optimize=meta["optimize"])
    except (ValueError, TypeError) as err:
        raise FileFormatError(f"{where} holds an inconsistent network: {err}") from None
    if "labels" in meta:  # checked by the schema: str or int labels, one per index
        net.labels = {label: symbol for _, label, symbol in meta["labels"]}
    return net


def _load(path: Any, backend: str | None, device: str | None, dtype: Any, key: Any,
          max_bytes: int | None) -> tuple[Any, dict[str, Any]]:
    meta, arrays, fields = _read(path, key, max_bytes)
    where = f"{str(_as_saved(Path(path)))!r}"
    net = _build_network(meta, arrays, backend, device, dtype, where)
    if meta["kind"] == "network":
        obj: Any = net
    else:
        obj = _build_fit_result(meta["fit"], arrays, net, fields, where, backend, device, dtype)
    _log.info("loaded %s %s (%s verified)", meta["kind"], path, meta["integrity"])
    return obj, meta


def load(path: str | os.PathLike, *, backend: str | None = None, device: Any = None,
         dtype: str | None = None, key: bytes | str | None = None, max_bytes: int | None = None) -> Any:
    """Load what :func:`save` wrote: a :class:`~tnmars.Network` or a fit result.

    The arrays go back to the backend, device and dtype they were saved from unless
    ``backend`` / ``device`` / ``dtype`` say otherwise (a CUDA file opens on the CPU with a
    warning when no GPU is present). Nothing in the file is ever executed: arrays are read
    with their declared dtype and shape (numbers only, never pickles), and the metadata must
    match a strict schema (types, shapes, and agreement with the arrays).

    What the checks guarantee: the SHA-256 stored in every file detects accidental damage
    (truncation, flipped bits, an edited entry) but not a deliberate change, since anyone
    can recompute it. A file signed with a ``key`` (see :func:`save`) and loaded with the
    same key is authenticated: a change by anyone without the key is refused. Either way no
    file can run code, crash ``load`` or give objects of the wrong type.

    Parameters
    ----------
    path
        A file written by :func:`save` (a name without an extension reads the ``.npz`` file
        :func:`save` wrote for it when no file has that exact name).
    backend, device, dtype
        Where to put the arrays (default: where they were saved from), read as
        :meth:`Network.to <tnmars.Network.to>` reads them (``device=0`` is ``"cuda:0"``, a
        ``torch.device`` or a torch dtype work too).
    key
        The signing key (bytes or text); defaults to the ``TNMARS_SIGNING_KEY`` environment
        variable. With a key, an unsigned file or a wrong signature is refused.
    max_bytes
        The most bytes of array data to accept, checked against the sizes the file declares
        before anything is decompressed. Default: 100 times the file's size or 256 MiB,
        whichever is larger (tnmars cores compress by about 1.1x; a "zip bomb" by 1000x).

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    FileFormatError
        The file is not a tnmars file, is truncated, was modified after saving, declares
        more data than ``max_bytes``, or fails the schema.

    Examples
    --------
    >>> import tempfile, os, tnmars
    >>> net = tnmars.Network.tucker((3, 4, 5), 2, seed=0)
    >>> p = tnmars.save(net, os.path.join(tempfile.mkdtemp(), "t.safetensors"), key="a secret")
    >>> tnmars.load(p, key="a secret").ranks
    (2, 2, 2)
    """
    return _load(path, backend, device, dtype, key, max_bytes)[0]


def _build_fit_result(fit: Mapping[str, Any], arrays: Mapping[str, np.ndarray], net: Network,
                      fields: Mapping[str, Any], where: str, backend, device, dtype) -> Any:
    probabilities = {bond: arrays[name] for bond, name in fit["probabilities"].items()}
    ranks = fit["ranks"]
    ranks = dict(ranks) if fit["ranks_type"] == "dict" else tuple(ranks)
    networks = {name: _build_network(sub, arrays, backend, device, dtype, where)
                for name, sub in fit["networks"].items()}
    cls = _fit_result_class()
    values = {**fields, **networks, "network": net, "ranks": ranks, "probabilities": probabilities}
    if dataclasses.is_dataclass(cls):
        kwargs = {f.name: values[f.name] for f in dataclasses.fields(cls) if f.init and f.name in values}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise FileFormatError(f"{where} holds a fit result this tnmars cannot rebuild ({err})") from None
    obj = cls.__new__(cls)
    for name, value in values.items():
        try:
            setattr(obj, name, value)
        except AttributeError:  # read-only property computed from other fields
            pass
    return obj
