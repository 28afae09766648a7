"""The strict schema of a tnmars file's metadata, checked before any array is read.

Every key has one type and one meaning; unknown keys, missing keys, values of another type
and metadata that disagrees with the arrays (a core's shape, an array's dtype, an array used
twice or not at all) are refused with a :class:`FileFormatError`. So no file, however it was
written or re-signed, can make :func:`tnmars.load` crash or return values of the wrong type.
The schema cannot tell whether numbers were changed deliberately: that is what keyed signing
(HMAC) is for.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._container import ArrayEntry, FileFormatError

NETWORK_KEYS = frozenset({"spec", "dims", "backend", "dtype", "device", "optimize", "cores"})
#: entries a network's metadata may add: ``labels``, ``[[kind, label, symbol], ...]`` with kind
#: "str" or "int" (the label -> index symbol map of a network declared with labels)
OPTIONAL_NETWORK_KEYS = frozenset({"labels"})
TOP_KEYS = (frozenset({"format", "format_version", "tnmars_version", "kind", "sha256", "hmac_sha256", "fit"})
            | NETWORK_KEYS | OPTIONAL_NETWORK_KEYS)
FIT_KEYS = frozenset({"probabilities", "ranks", "ranks_type", "fields", "networks", "class"})
#: fields of a fit result that are rebuilt from arrays and networks, never from ``fields``
RESERVED_FIELDS = frozenset({"network", "ranks", "probabilities"})
KINDS = ("network", "fit_result")
BACKENDS = ("numpy", "torch", "cupy")
#: dtypes a network may be saved with; bfloat16 is stored as float32 (NumPy has no bfloat16)
DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                    "float16", "float32", "float64", "bfloat16", "complex64", "complex128"})
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_TEXT = 10_000
#: the longest spec a file may hold: a network of up to ``_container.MAX_MEMBERS`` cores (a TT of
#: 2,100 cores has a spec of 10,499 characters, and was refused at the general text limit)
MAX_SPEC = 4_000_000
#: the longest string label a file may hold (a longer one is left out by save, with a warning)
MAX_LABEL = 1000


class SchemaError(Exception):
    """Raised inside this module; :func:`validate` reports it as a FileFormatError."""


def _fail(message: str) -> typing.NoReturn:
    raise SchemaError(message)


def _text(value: Any, what: str, limit: int = _MAX_TEXT) -> str:
    if not isinstance(value, str):
        _fail(f"{what} must be a string; got {type(value).__name__}")
    if len(value) > limit:
        _fail(f"{what} is {len(value):,} characters long")
    return value


def _int(value: Any, what: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"{what} must be an integer; got {type(value).__name__}")
    if value < low:
        _fail(f"{what} must be >= {low}; got {value}")
    return value


def _mapping(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        _fail(f"{what} must be a JSON object; got {type(value).__name__}")
    return value


def _keys(value: dict, required: frozenset, allowed: frozenset, what: str) -> None:
    missing = sorted(required - value.keys())
    if missing:
        _fail(f"{what} lacks {', '.join(map(repr, missing))}")
    unknown = sorted(value.keys() - allowed)
    if unknown:
        _fail(f"{what} has unknown entries {', '.join(map(repr, unknown[:5]))}")


def _optimizer_names() -> frozenset:
    import opt_einsum

    return frozenset(getattr(opt_einsum.paths, "_PATH_OPTIONS", {})) | {"auto", "auto-hq"}


def _array_dtype(name: str) -> np.dtype:
    """The NumPy dtype a file stores a network of dtype ``name`` with."""
    return np.dtype("float32" if name == "bfloat16" else name)


class _Claims:
    """Which arrays the metadata has named: each array exactly once."""

    def __init__(self, arrays: Mapping[str, ArrayEntry]) -> None:
        self.arrays = arrays
        self.used: set[str] = set()

    def take(self, name: Any, what: str) -> ArrayEntry:
        _text(name, what, 1000)
        if name not in self.arrays:
            _fail(f"{what} names an array {name!r} that the file does not hold")
        if name in self.used:
            _fail(f"array {name!r} is named twice")
        self.used.add(name)
        return self.arrays[name]

    def finish(self) -> None:
        extra = sorted(set(self.arrays) - self.used)
        if extra:
            _fail(f"the file holds arrays the metadata never names: {', '.join(map(repr, extra[:5]))}")


def network(meta: Any, claims: _Claims, what: str = "the network") -> dict:
    """Check one network's metadata against its arrays; returns ``{"bonds": {...}, "dims": ...}``."""
    from .spec import parse_spec

    meta = _mapping(meta, what)
    _keys(meta, NETWORK_KEYS, NETWORK_KEYS | OPTIONAL_NETWORK_KEYS | (TOP_KEYS if what == "the network" else frozenset()),
          what)
    spec = _text(meta["spec"], f"{what}'s spec", MAX_SPEC)
    try:
        parsed = parse_spec(spec)
    except (ValueError, TypeError) as err:
        _fail(f"{what} has an invalid spec {spec!r} ({err})")
    dims = _mapping(meta["dims"], f"{what}'s dims")
    indices = set("".join(parsed.inputs))
    if set(dims) != indices:
        _fail(f"{what}'s dims name {sorted(dims)} but its spec {spec!r} has indices {sorted(indices)}")
    for index, size in dims.items():
        _int(size, f"{what}'s size of index {index!r}", 0 if index in parsed.bonds else 1)
    backend = meta["backend"]
    if not isinstance(backend, str) or backend not in BACKENDS:
        _fail(f"{what}'s backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    dtype = meta["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        _fail(f"{what}'s dtype must be one of {', '.join(sorted(DTYPES))}; got {dtype!r}")
    device = _text(meta["device"], f"{what}'s device", 100)
    if backend == "numpy" and device != "cpu":
        _fail(f"{what} is on the numpy backend but names device {device!r}")
    optimize = _text(meta["optimize"], f"{what}'s optimize", 100)
    if optimize not in _optimizer_names():
        _fail(f"{what}'s optimize {optimize!r} is not a contraction optimizer")
    cores = meta["cores"]
    if not isinstance(cores, list) or len(cores) != len(parsed.inputs):
        _fail(f"{what} must list {len(parsed.inputs)} core arrays (one per term of {spec!r})")
    stored = _array_dtype(dtype)
    for k, (term, name) in enumerate(zip(parsed.inputs, cores)):
        entry = claims.take(name, f"{what}'s core {k}")
        expected = tuple(dims[c] for c in term)
        if entry.shape != expected:
            _fail(f"{what}'s core {k} ({name!r}) has shape {entry.shape}, but dims say {expected}")
        if entry.dtype.newbyteorder("=") != stored:
            _fail(f"{what}'s core {k} ({name!r}) holds {entry.dtype.name}, but the metadata says {dtype}")
    if "labels" in meta:
        _labels(meta["labels"], indices, what)
    num_params = sum(math.prod(dims[c] for c in term) for term in parsed.inputs)
    return {"bonds": {b: dims[b] for b in parsed.bonds}, "spec": parsed.spec, "num_params": num_params}


def _labels(value: Any, indices: set, what: str) -> None:
    """``[[kind, label, symbol], ...]``: kind "str" or "int", distinct labels, each symbol an
    index of the spec, each index named once."""
    if not isinstance(value, list) or len(value) != len(indices):
        _fail(f"{what}'s labels must list one [kind, label, symbol] per index ({len(indices)})")
    seen_labels, seen_symbols = set(), set()
    for item in value:
        if not isinstance(item, list) or len(item) != 3:
            _fail(f"{what}'s labels must be [kind, label, symbol] triples; got {str(item)[:80]}")
        kind, label, symbol = item
        if kind == "str":
            _text(label, f"{what}'s label", MAX_LABEL)
        elif kind == "int":
            if isinstance(label, bool) or not isinstance(label, int):
                _fail(f"{what}'s label {str(label)[:80]} is not an int")
        else:
            _fail(f"{what}'s label kind must be 'str' or 'int'; got {str(kind)[:20]!r}")
        if not isinstance(symbol, str) or symbol not in indices:
            _fail(f"{what}'s label {str(label)[:80]!r} names {str(symbol)[:20]!r}, not an index of its spec")
        if (kind, label) in seen_labels or symbol in seen_symbols:
            _fail(f"{what}'s labels name a label or an index twice")
        seen_labels.add((kind, label))
        seen_symbols.add(symbol)


# ------------------------------------------------------------------------------ fit results
def _conform(value: Any, tp: Any, what: str) -> Any:
    """``value`` (decoded JSON) as an instance of the annotation ``tp``, or a SchemaError.
    JSON lists become tuples where a tuple is declared, ints become floats where a float is."""
    if tp is Any or tp is object:
        return value
    if tp is type(None) or tp is None:
        if value is not None:
            _fail(f"{what} must be null")
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _conform(value, option, what)
            except SchemaError:
                continue
        _fail(f"{what} has the wrong type ({type(value).__name__}; expected {tp})")
    if tp is bool:
        if not isinstance(value, bool):
            _fail(f"{what} must be true or false; got {type(value).__name__}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(f"{what} must be an integer; got {type(value).__name__}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(f"{what} must be a number; got {type(value).__name__}")
        try:
            return float(value)
        except OverflowError:  # an int of hundreds of digits: no float holds it
            _fail(f"{what} is out of a float's range")
    if tp is str:
        return _text(value, what)
    if tp is np.ndarray or origin is np.ndarray:
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError):
            _fail(f"{what} must be a numeric array")
        if arr.dtype.kind not in "biuf":
            _fail(f"{what} must be a numeric array; got {arr.dtype}")
        return arr
    container = origin or tp
    if container in (list, Sequence, typing.Sequence) or container is tuple:
        if not isinstance(value, (list, tuple)):
            _fail(f"{what} must be a list; got {type(value).__name__}")
        if container is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_conform(v, args[0], f"{what}[{i}]") for i, v in enumerate(value))
            if args:
                if len(args) != len(value):
                    _fail(f"{what} must have {len(args)} entries; got {len(value)}")
                return tuple(_conform(v, a, f"{what}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
            return tuple(value)
        item = args[0] if args else Any
        return [_conform(v, item, f"{what}[{i}]") for i, v in enumerate(value)]
    if container in (dict, Mapping, typing.Mapping):
        if not isinstance(value, dict):
            _fail(f"{what} must be a JSON object; got {type(value).__name__}")
        key_t, val_t = args if args else (Any, Any)
        return {_conform(k, key_t, f"a key of {what}"): _conform(v, val_t, f"{what}[{k!r}]") for k, v in value.items()}
    _fail(f"{what} is declared as {tp}, which a file cannot hold")


def result_fields(cls: type) -> tuple[dict[str, Any], set[str]]:
    """The init fields of the fit-result class with their resolved types, and the required ones."""
    if not dataclasses.is_dataclass(cls):
        return {}, set()
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: fall back to the raw ones
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
    types_, required = {}, set()
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        types_[f.name] = hints.get(f.name, Any)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.add(f.name)
    return types_, required


def _conform_ok(value: Any, tp: Any) -> bool:
    try:
        _conform(value, tp, "value")
    except SchemaError:
        return False
    return True


def _is_network_type(tp: Any) -> bool:
    from .network import Network

    if tp is Network:
        return True
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and Network in typing.get_args(tp)


def _rank_order(fit: dict, bonds: Mapping[str, int], unjson) -> list[str]:
    """The bonds a fit result's tuple of ranks follows: its own ``bonds`` field when that names
    the network's bonds (TR results saved before a78eee4 list them around the ring, not in the network's order),
    else the network's order."""
    fields = fit.get("fields")
    raw = fields.get("bonds") if isinstance(fields, dict) else None
    try:
        order = unjson(raw) if raw is not None else None
    except Exception:  # a malformed field is reported where the fields are checked
        return list(bonds)
    if isinstance(order, (list, tuple)) and all(isinstance(b, str) for b in order) \
            and len(order) == len(bonds) and set(order) == set(bonds):
        return list(order)
    return list(bonds)


def fit_result(fit: Any, claims: _Claims, main: dict, cls: type, unjson) -> dict[str, Any]:
    """Check a fit result's metadata; returns the decoded ``fields`` (typed as the class says)."""
    fit = _mapping(fit, "the fit result")
    _keys(fit, FIT_KEYS, FIT_KEYS, "the fit result")
    _text(fit["class"], "the fit result's class", 300)
    field_types, required = result_fields(cls)

    networks = _mapping(fit["networks"], "the fit result's networks")
    sub = {}
    for name, meta in networks.items():
        if field_types and not _is_network_type(field_types.get(name)):
            _fail(f"the fit result's network {name!r} is not a network field of {cls.__name__}")
        sub[name] = network(meta, claims, f"the fit result's {name}")

    bonds = main["bonds"]
    ranks_type = fit["ranks_type"]
    ranks = fit["ranks"]
    if not isinstance(ranks_type, str):
        _fail(f"the fit result's ranks_type must be 'tuple' or 'dict'; got {type(ranks_type).__name__}")
    if ranks_type == "tuple":
        if not isinstance(ranks, list) or len(ranks) != len(bonds):
            _fail(f"the fit result's ranks must list {len(bonds)} integers (one per bond)")
        values = dict(zip(_rank_order(fit, bonds, unjson), ranks))
    elif ranks_type == "dict":
        declared = field_types.get("ranks")
        if declared is not None and (typing.get_origin(declared) or declared) is tuple:
            _fail(f"the fit result's ranks must be a tuple for {cls.__name__}; got ranks_type 'dict'")
        values = _mapping(ranks, "the fit result's ranks")
        if set(values) != set(bonds):
            _fail(f"the fit result's ranks name {sorted(values)}, but the bonds are {sorted(bonds)}")
    else:
        _fail(f"the fit result's ranks_type must be 'tuple' or 'dict'; got {ranks_type!r}")
    for bond, r in values.items():
        if _int(r, f"the rank of bond {bond!r}") != bonds[bond]:
            _fail(f"the fit result says bond {bond!r} has rank {r}, but its network has {bonds[bond]}")

    probabilities = _mapping(fit["probabilities"], "the fit result's probabilities")
    full = next(iter(sub.values()), None)
    for bond, name in probabilities.items():
        if bond not in bonds:
            _fail(f"the fit result has mask probabilities for {bond!r}, which is not a bond")
        entry = claims.take(name, f"the probabilities of bond {bond!r}")
        if entry.dtype.kind != "f" or len(entry.shape) != 1:
            _fail(f"the probabilities of bond {bond!r} must be a 1-D float array; got {entry.dtype} {entry.shape}")
        longest = full["bonds"].get(bond) if full is not None and full["spec"] == main["spec"] else None
        if longest is not None and entry.shape[0] != longest:
            _fail(f"the probabilities of bond {bond!r} have {entry.shape[0]} entries for a bond of {longest}")
        if entry.shape[0] < bonds[bond]:
            _fail(f"the probabilities of bond {bond!r} have {entry.shape[0]} entries, fewer than its rank")

    fields = _mapping(fit["fields"], "the fit result's fields")
    decoded = {}
    for name, value in fields.items():
        if name in RESERVED_FIELDS or name in networks:
            _fail(f"the fit result's field {name!r} must not be given as a plain value")
        if field_types and name not in field_types:
            _fail(f"the fit result has a field {name!r} that {cls.__name__} does not have")
        tp = field_types.get(name, Any)
        if _is_network_type(tp):  # stored under "networks"; here only an absent one (None) may appear
            if value is not None or not _conform_ok(None, tp):
                _fail(f"the fit result's field {name!r} must be a network")
            decoded[name] = None
            continue
        decoded[name] = _conform(unjson(value), tp, f"the fit result's {name}")
    missing = sorted(required - RESERVED_FIELDS - set(decoded) - set(networks))
    if missing:
        _fail(f"the fit result lacks {', '.join(map(repr, missing))}")
    if "bonds" in decoded and sorted(decoded["bonds"]) != sorted(bonds):  # (the order may differ: TR's ring)
        _fail(f"the fit result's bonds {decoded['bonds']} differ from its network's {tuple(bonds)}")
    if "num_params" in decoded and decoded["num_params"] != main["num_params"]:
        _fail(f"the fit result says {decoded['num_params']} parameters, but its network has {main['num_params']}")
    for bond, phi in (decoded.get("relaxation_probabilities") or {}).items():  # keep probabilities per bond
        if bond not in bonds:
            _fail(f"the fit result has relaxation probabilities for {bond!r}, which is not a bond")
        phi = np.asarray(phi)
        if phi.ndim != 1 or phi.shape[0] < bonds[bond]:
            _fail(f"the relaxation probabilities of bond {bond!r} must be a 1-D array of at least its rank "
                  f"({bonds[bond]}) entries; got shape {phi.shape}")
        if not np.all((phi >= 0) & (phi <= 1)):  # (NaN fails too)
            _fail(f"the relaxation probabilities of bond {bond!r} must lie in [0, 1]")
    for name in ("steps_run", "evaluations"):  # counts
        if name in decoded and (isinstance(decoded[name], bool) or not isinstance(decoded[name], int)
                                or decoded[name] < 0):
            _fail(f"the fit result's {name} must be a whole number >= 0; got {decoded[name]!r}")
    if "seconds" in decoded and not (isinstance(decoded["seconds"], (int, float)) and 0 <= decoded["seconds"] < math.inf):
        _fail(f"the fit result's seconds must be a finite number >= 0; got {decoded['seconds']!r}")
    _summary_settings(decoded.get("settings"))
    if "max_ranks" in decoded:  # one per bond, in the ranks' order, none below its bond's rank
        caps = decoded["max_ranks"]
        order = _rank_order(fit, bonds, unjson)
        if not isinstance(caps, (list, tuple)) or len(caps) != len(order):
            _fail(f"the fit result's max_ranks must list {len(order)} integers (one per bond)")
        for bond, cap in zip(order, caps):
            if isinstance(cap, bool) or not isinstance(cap, int) or cap < bonds[bond]:
                _fail(f"the fit result's max_ranks give bond {bond!r} {cap!r}, below its rank {bonds[bond]}")
    return decoded


def _summary_settings(settings: Any) -> None:
    """The settings a fit result's ``summary()`` reads, of the types it reads them as (a file whose
    ``noise_floor`` was a string loaded, and its summary raised TypeError: an outside probe)."""
    if not isinstance(settings, Mapping):
        return

    def number(value: Any, what: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(f"the fit result's settings[{what}] must be a number; got {value!r}")

    if "noise_floor" in settings:
        number(settings["noise_floor"], "'noise_floor'")
    for key, entries in (("offset", {"mean": number}), ("cross_validation", {
            "median_error": number, "fitted_error": number, "left_out_share": number})):
        value = settings.get(key)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            _fail(f"the fit result's settings[{key!r}] must be a mapping; got {type(value).__name__}")
        for entry, check in entries.items():
            if entry not in value:
                _fail(f"the fit result's settings[{key!r}] lacks {entry!r}")
            check(value[entry], f"{key!r}][{entry!r}")
    checked = settings.get("cross_validation")
    if isinstance(checked, Mapping) and "worst_error" in checked:  # (files written before 2026-12-04 lack it)
        number(checked["worst_error"], "'cross_validation']['worst_error'")
    if isinstance(checked, Mapping) and (
            isinstance(checked.get("refits"), bool) or not isinstance(checked.get("refits"), int)
            or checked["refits"] < 0):
        _fail("the fit result's settings['cross_validation']['refits'] must be a whole number; got "
              f"{checked.get('refits')!r}")
    offset = settings.get("offset")
    if isinstance(offset, Mapping) and not isinstance(offset.get("fitted_without_mean", False), bool):
        _fail("the fit result's settings['offset']['fitted_without_mean'] must be True or False")


def validate(meta: Any, arrays: Mapping[str, ArrayEntry], where: str, fit_class=None, unjson=None) -> dict[str, Any]:
    """Check the whole metadata document against the arrays before any is read.

    Returns the decoded fit-result fields (empty for a network). ``format`` and the version
    are checked by the caller first, so that a newer file gets the "upgrade" message.
    """
    try:
        _keys(meta, frozenset({"format", "format_version", "tnmars_version", "kind", "sha256"}) | NETWORK_KEYS,
              TOP_KEYS, "the metadata")
        _text(meta["tnmars_version"], "tnmars_version", 100)
        if not isinstance(meta["sha256"], str) or not _HEX64.fullmatch(meta["sha256"]):
            _fail("sha256 must be 64 hexadecimal digits")
        if "hmac_sha256" in meta and (not isinstance(meta["hmac_sha256"], str) or not _HEX64.fullmatch(meta["hmac_sha256"])):
            _fail("hmac_sha256 must be 64 hexadecimal digits")
        kind = meta["kind"]
        if not isinstance(kind, str) or kind not in KINDS:
            _fail(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        if (kind == "fit_result") != ("fit" in meta):
            _fail("a fit result needs its 'fit' entry, and only a fit result has one")
        claims = _Claims(arrays)
        main = network(meta, claims)
        fields = fit_result(meta["fit"], claims, main, fit_class, unjson) if kind == "fit_result" else {}
        claims.finish()
        return fields
    except SchemaError as err:
        raise FileFormatError(f"{where} has invalid metadata: {err}") from None
