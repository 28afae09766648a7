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
import hashlib
import json
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .backends import get_backend
from .network import Network

__all__ = ["save", "load", "read_metadata", "FileFormatError", "FORMAT_VERSION"]

#: version of the on-disk layout; bumped when the layout changes incompatibly
FORMAT_VERSION = 1
_MAGIC = "tnmars"
_META_KEY = "__tnmars_metadata__"
_SUFFIXES = (".npz", ".safetensors")
#: dtypes a file may hold (anything else, notably ``object``, is refused)
_ALLOWED_KINDS = frozenset("biuf")


class FileFormatError(ValueError):
    """A file is not a readable tnmars file: missing, truncated, tampered or of a newer format."""


# ------------------------------------------------------------------------------ helpers
def _tnmars_version() -> str:
    from . import __version__

    return __version__


def _jsonable(value: Any, tuples: bool = False) -> Any:
    """Convert NumPy / torch scalars, arrays, tuples and dataclasses into plain JSON values
    (with ``tuples=True`` a tuple is tagged ``{"__tuple__": [...]}`` so it comes back a tuple)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, Mapping):
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


def _unjson(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        if set(value) == {"__tuple__"} and isinstance(value["__tuple__"], list):
            return tuple(_unjson(v) for v in value["__tuple__"])
        return {k: _unjson(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unjson(v) for v in value]
    return value


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


def _canonical(meta: Mapping[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _digest(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the metadata (without the digest itself) and every array's name, dtype,
    shape and bytes, in sorted name order."""
    h = hashlib.sha256()
    h.update(_canonical({k: v for k, v in meta.items() if k != "sha256"}))
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(name.encode("utf-8") + b"\0" + arr.dtype.str.encode() + b"\0" + repr(arr.shape).encode() + b"\0")
        h.update(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


def _safetensors():
    try:
        import safetensors
        import safetensors.numpy  # noqa: F401
    except ImportError as err:
        raise ImportError(".safetensors files need the safetensors package: pip install safetensors "
                          "(or use a .npz path)") from err
    return safetensors


def _is_fit_result(obj: Any) -> bool:
    return isinstance(getattr(obj, "network", None), Network) and hasattr(obj, "ranks")


# ------------------------------------------------------------------------------ encoding
def _network_payload(net: Network, prefix: str = "core") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
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
    return meta, arrays


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
            warnings.warn(f"fit-result field {name!r} ({type(value).__name__}) is not saved", stacklevel=3)
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


# ------------------------------------------------------------------------------ public API
def save(obj: Any, path: str | os.PathLike) -> Path:
    """Save a :class:`~tnmars.Network` or a fit result (from :func:`tnmars.fit`) to ``path``.

    The extension picks the container: ``.npz`` (default when there is none) or
    ``.safetensors``. Cores on any backend or device are copied to host memory; the
    metadata remembers where they came from so :func:`load` can put them back.

    Parameters
    ----------
    obj
        A ``Network``, or an object with ``.network`` (a ``Network``) and ``.ranks`` such as
        :class:`tnmars.FitResult`.
    path
        Destination file. Parent folders must exist.

    Returns
    -------
    Path
        The path written (with ``.npz`` appended when no known extension was given).

    Examples
    --------
    >>> import tempfile, os, tnmars
    >>> path = tnmars.save(tnmars.Network.cp((3, 4), 2, seed=1), os.path.join(tempfile.mkdtemp(), "cp"))
    >>> path.suffix
    '.npz'
    """
    path = Path(path)
    if path.suffix not in _SUFFIXES:
        path = path.with_name(path.name + ".npz")
    if isinstance(obj, Network):
        kind = "network"
        meta, arrays = _network_payload(obj)
    elif _is_fit_result(obj):
        kind = "fit_result"
        meta, arrays = _fit_payload(obj)
    else:
        raise TypeError(f"tnmars.save stores a Network or a fit result; got {type(obj).__name__}")
    for name, arr in arrays.items():
        if arr.dtype.kind not in _ALLOWED_KINDS:
            raise TypeError(f"array {name!r} has dtype {arr.dtype}, which tnmars files do not store")
    meta = {
        "format": _MAGIC,
        "format_version": FORMAT_VERSION,
        "tnmars_version": _tnmars_version(),
        "kind": kind,
        **meta,
    }
    meta = _jsonable(meta)
    meta["sha256"] = _digest(meta, arrays)
    if not path.parent.exists():
        raise FileNotFoundError(f"cannot save to {str(path)!r}: folder {str(path.parent)!r} does not exist")
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".safetensors":
        st_save = _safetensors().numpy.save_file

        st_save(arrays, str(tmp), metadata={_META_KEY: json.dumps(meta)})
    else:
        blob = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **{_META_KEY: blob}, **arrays)
    os.replace(tmp, path)  # never leave a half-written file under the real name
    return path


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify a file: metadata and arrays, or a FileFormatError."""
    if not path.exists():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    if path.is_dir():
        raise FileFormatError(f"{str(path)!r} is a folder, not a tnmars file")
    where = f"{str(path)!r}"
    arrays: dict[str, np.ndarray] = {}
    if path.suffix == ".safetensors":
        safe_open = _safetensors().safe_open
        try:
            with safe_open(str(path), framework="numpy") as fh:
                header = fh.metadata() or {}
                for name in fh.keys():
                    arrays[name] = fh.get_tensor(name)
        except Exception as err:  # safetensors raises its own error types
            raise FileFormatError(f"{where} is not a readable safetensors file ({err})") from None
        raw = header.get(_META_KEY)
        if raw is None:
            raise FileFormatError(f"{where} is a safetensors file without tnmars metadata")
    else:
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head != b"PK\x03\x04":
            raise FileFormatError(
                f"{where} is not a tnmars file: tnmars files are .npz (zip) or .safetensors"
                + (" and this one is empty" if not head else "")
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                for name in data.files:
                    arrays[name] = np.asarray(data[name])
        except Exception as err:  # zipfile, zlib, numpy and OS errors of every kind
            msg = str(err)
            if "pickle" in msg.lower():
                raise FileFormatError(f"{where} holds pickled objects, which tnmars never loads") from None
            raise FileFormatError(f"{where} is truncated or corrupted ({type(err).__name__}: {msg})") from None
        blob = arrays.pop(_META_KEY, None)
        if blob is None or blob.dtype != np.uint8 or blob.ndim != 1:
            raise FileFormatError(f"{where} is not a tnmars file (no tnmars metadata)")
        raw = blob.tobytes()
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FileFormatError(f"{where} has corrupted metadata ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != _MAGIC:
        raise FileFormatError(f"{where} is not a tnmars file")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise FileFormatError(
            f"{where} uses file-format version {version!r}, newer than this tnmars understands "
            f"({FORMAT_VERSION}); upgrade tnmars (file written by tnmars {meta.get('tnmars_version')})"
        )
    for name, arr in arrays.items():
        if arr.dtype.kind not in _ALLOWED_KINDS:
            raise FileFormatError(f"{where}: array {name!r} has dtype {arr.dtype}, which tnmars files never hold")
    expected = meta.get("sha256")
    if not isinstance(expected, str) or _digest(meta, arrays) != expected:
        raise FileFormatError(
            f"{where} failed its integrity check (SHA-256 mismatch): the file was modified or corrupted"
        )
    return meta, arrays


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The verified JSON metadata of a tnmars file (no arrays are converted to a backend).

    Raises :class:`FileFormatError` if the file is corrupted, as :func:`load` would.
    """
    meta, arrays = _read(Path(path))
    meta = dict(meta)
    meta["array_shapes"] = {name: list(arr.shape) for name, arr in arrays.items()}
    return meta


def _build_network(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], backend, device, dtype, where) -> Network:
    try:
        spec = meta["spec"]
        names = meta["cores"]
        cores = [arrays[n] for n in names]
    except KeyError as err:
        raise FileFormatError(f"{where} is missing {err} in its network data") from None
    saved_backend = meta.get("backend", "numpy")
    target = backend or saved_backend
    try:
        be = get_backend(target)
    except ImportError:
        if backend is not None:
            raise
        warnings.warn(f"{where} was saved from the {saved_backend} backend, which is not installed; loading into numpy",
                      stacklevel=3)
        be, target = get_backend("numpy"), "numpy"
    if dtype is None:
        dtype = meta.get("dtype")
        if be.name in ("numpy", "cupy"):
            try:
                np.dtype(dtype)
            except TypeError:  # e.g. a torch bfloat16 file read into NumPy: keep the stored float32
                dtype = None
    if device is None and backend is None and target != "numpy":
        device = meta.get("device")
        try:
            be.check_device(device)
        except ValueError:
            warnings.warn(f"{where} was saved on device {device!r}, which is not available; loading on the CPU",
                          stacklevel=3)
            device = None
    converted = [be.asarray(np.array(c), dtype=dtype, device=device) for c in cores]
    try:
        net = Network(spec, cores=converted, optimize=meta.get("optimize", "auto"))
    except (ValueError, TypeError) as err:
        raise FileFormatError(f"{where} holds an inconsistent network: {err}") from None
    if meta.get("dims") and {k: int(v) for k, v in meta["dims"].items()} != net.dims:
        raise FileFormatError(f"{where}: the stored index sizes {meta['dims']} do not match its cores {net.dims}")
    return net


def load(path: str | os.PathLike, *, backend: str | None = None, device: str | None = None,
         dtype: str | None = None) -> Any:
    """Load what :func:`save` wrote: a :class:`~tnmars.Network` or a fit result.

    The arrays go back to the backend, device and dtype they were saved from unless
    ``backend`` / ``device`` / ``dtype`` say otherwise (a CUDA file opens on the CPU with a
    warning when no GPU is present). Nothing in the file is ever executed: arrays are read
    with ``allow_pickle=False`` (or by safetensors) and must be numeric.

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    FileFormatError
        The file is not a tnmars file, is truncated or was modified after saving.

    Examples
    --------
    >>> import tempfile, os, tnmars
    >>> net = tnmars.Network.tucker((3, 4, 5), 2, seed=0)
    >>> p = tnmars.save(net, os.path.join(tempfile.mkdtemp(), "t.safetensors"))
    >>> tnmars.load(p).ranks
    (2, 2, 2)
    """
    path = Path(path)
    meta, arrays = _read(path)
    where = f"{str(path)!r}"
    net = _build_network(meta, arrays, backend, device, dtype, where)
    kind = meta.get("kind")
    if kind == "network":
        return net
    if kind == "fit_result":
        return _build_fit_result(meta["fit"], arrays, net, where, backend, device, dtype)
    raise FileFormatError(f"{where} holds an unknown kind of object {kind!r}")


def _build_fit_result(fit: Mapping[str, Any], arrays: Mapping[str, np.ndarray], net: Network, where: str,
                      backend, device, dtype) -> Any:
    try:
        probabilities = {bond: np.array(arrays[name]) for bond, name in fit["probabilities"].items()}
        ranks = fit["ranks"]
        ranks = {k: int(v) for k, v in ranks.items()} if fit.get("ranks_type") == "dict" else tuple(int(r) for r in ranks)
        fields = _unjson(fit.get("fields", {}))
        networks = {name: _build_network(sub, arrays, backend, device, dtype, where)
                    for name, sub in fit.get("networks", {}).items()}
    except (KeyError, AttributeError, TypeError) as err:
        raise FileFormatError(f"{where} has malformed fit-result metadata ({err})") from None
    from .fitting import FitResult  # the only class a fit result is rebuilt as: no class name is imported from the file

    values = {"network": net, "ranks": ranks, "probabilities": probabilities, **fields, **networks}
    if dataclasses.is_dataclass(FitResult):
        kwargs = {}
        for f in dataclasses.fields(FitResult):
            if f.init and f.name in values:
                kwargs[f.name] = _retuple(values[f.name], str(f.type))
        try:
            return FitResult(**kwargs)
        except TypeError as err:
            raise FileFormatError(f"{where} holds a fit result this tnmars cannot rebuild ({err})") from None
    obj = FitResult.__new__(FitResult)
    for key, value in values.items():
        try:
            setattr(obj, key, value)
        except AttributeError:  # read-only property computed from other fields
            pass
    return obj


def _retuple(value: Any, annotation: str) -> Any:
    """JSON has no tuples: give back tuples where the field is declared as one."""
    if isinstance(value, list) and annotation.replace("typing.", "").lower().startswith("tuple"):
        return tuple(value)
    return value
