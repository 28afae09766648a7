"""The bytes of a tnmars file: the two containers, read within limits and written atomically.

A file is numeric arrays plus one JSON document. Reading never trusts a size it has not
checked: the zip central directory and every ``.npy`` header are read first, and a file whose
arrays would need more memory than the caller's limit is refused before one byte is inflated
(a 1 MiB zip can declare 1 GiB of zeros). Arrays are then read straight into their final
buffers while their digest is computed, so memory stays at one copy of the data. Writing goes
to a fresh temporary file in the destination folder (created exclusively, so a link planted
there is never followed) that replaces the destination atomically.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import os
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

#: name of the array (``.npz``) or header entry (``.safetensors``) holding the JSON metadata
META_KEY = "__tnmars_metadata__"
#: the metadata document may not be larger than this, nor nested deeper than MAX_DEPTH
MAX_METADATA_BYTES = 64 * 2**20
MAX_DEPTH = 64
#: a zip with more members than this is not a tnmars file (each one costs memory to list)
MAX_MEMBERS = 100_000
#: default memory limit for the arrays of one file: this many bytes, or RATIO times the
#: file's size if larger (tnmars cores compress by about 1.1x; zeros by about 1000x)
DEFAULT_FLOOR = 256 * 2**20
DEFAULT_RATIO = 100
#: array element kinds a file may hold: bool, signed/unsigned int, float, complex
ALLOWED_KINDS = frozenset("biufc")
_CHUNK = 1 << 20
#: a safetensors header longer than this is not one tnmars wrote (metadata plus array entries)
_MAX_ST_HEADER = 2 * MAX_METADATA_BYTES
_ST_DTYPES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16", "U32": "uint32",
    "I32": "int32", "U64": "uint64", "I64": "int64", "F16": "float16", "F32": "float32", "F64": "float64",
    "C64": "complex64", "C128": "complex128",
}


class FileFormatError(ValueError):
    """A file is not a readable tnmars file: missing, truncated, tampered or of a newer format."""


@dataclass(frozen=True)
class ArrayEntry:
    """An array of a file whose dtype and shape are known before its data are read."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    read: Callable[[Callable[[memoryview], None]], np.ndarray]

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * self.dtype.itemsize


# ------------------------------------------------------------------------------ limits
def memory_limit(path: Path, max_bytes: int | None) -> int:
    """The most bytes of array data a file may hold: ``max_bytes``, or by default the larger
    of :data:`DEFAULT_FLOOR` and :data:`DEFAULT_RATIO` times the file's size."""
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 0:
            raise TypeError(f"max_bytes must be a non-negative integer; got {max_bytes!r}")
        return int(max_bytes)
    return max(DEFAULT_FLOOR, DEFAULT_RATIO * path.stat().st_size)


def check_total(where: str, declared: int, limit: int, max_bytes: int | None) -> None:
    if declared > limit:
        hint = "" if max_bytes is not None else f" (the default limit: {DEFAULT_RATIO}x the file's size, at least 256 MiB)"
        raise FileFormatError(
            f"{where} declares {declared:,} bytes of arrays, more than the {limit:,} allowed{hint}; "
            "refused before reading. If you trust the file, pass a larger max_bytes= to tnmars.load"
        )


def json_depth(text: bytes) -> int:
    """Deepest nesting of ``[`` / ``{`` in a JSON document, strings skipped, in linear time
    without recursion, so a document nested 100,000 deep is refused before ``json`` recurses.
    Exact for every document ``json`` accepts (outside strings JSON has no backslashes)."""
    arr = np.frombuffer(text, dtype=np.uint8)
    if arr.size == 0:
        return 0
    quote = arr == ord('"')
    backslash = arr == ord("\\")
    if backslash.any():  # a quote is escaped when an odd run of backslashes precedes it
        idx = np.arange(arr.size)
        last_plain = np.maximum.accumulate(np.where(backslash, -1, idx))
        run = np.zeros(arr.size, dtype=np.int64)
        run[1:] = idx[:-1] - last_plain[:-1]
        quote &= run % 2 == 0
    inside = (np.cumsum(quote) % 2 == 1) & ~quote  # between an opening quote and its closing one
    step = np.zeros(arr.size, dtype=np.int64)
    step[(arr == ord("[")) | (arr == ord("{"))] = 1
    step[(arr == ord("]")) | (arr == ord("}"))] = -1
    step[inside] = 0
    return int(np.cumsum(step).max(initial=0))


def parse_json(raw: bytes, where: str) -> Any:
    """The metadata document, or a FileFormatError (never a RecursionError or MemoryError)."""
    if len(raw) > MAX_METADATA_BYTES:
        raise FileFormatError(f"{where} has {len(raw):,} bytes of metadata, more than tnmars ever writes")
    depth = json_depth(raw)
    if depth > MAX_DEPTH:
        raise FileFormatError(f"{where} has metadata nested {depth} levels deep (at most {MAX_DEPTH} allowed)")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_non_finite, parse_float=_finite_float)
    except _NonFinite as err:
        raise FileFormatError(
            f"{where} has corrupted metadata: {err} is not a finite JSON number (tnmars never writes one; "
            "it stores NaN and Inf as text)"
        ) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise FileFormatError(f"{where} has corrupted metadata ({type(err).__name__}: {err})") from None


class _NonFinite(Exception):
    """A NaN / Infinity literal or an overflowing number in the metadata: Python's ``json``
    accepts them, but the digest (strict JSON) cannot be computed over them."""


def _non_finite(literal: str) -> float:
    raise _NonFinite(literal)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # e.g. 1e400
        raise _NonFinite(text[:40])
    return value


# ------------------------------------------------------------------------------ digests
class Digest:
    """SHA-256 (and, with a key, HMAC-SHA256) over the metadata, then every array's name,
    dtype, shape and little-endian bytes in sorted name order, fed as the arrays are read."""

    def __init__(self, meta: Mapping[str, Any], key: bytes | None) -> None:
        self.sha = hashlib.sha256(canonical({k: v for k, v in meta.items() if k != "sha256"}))
        self.mac = None
        if key is not None:
            plain = {k: v for k, v in meta.items() if k not in ("sha256", "hmac_sha256")}
            self.mac = hmac.new(key, canonical(plain), hashlib.sha256)

    def update(self, data: Any) -> None:
        self.sha.update(data)
        if self.mac is not None:
            self.mac.update(data)

    def header(self, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.update(name.encode("utf-8") + b"\0" + dtype.str.encode() + b"\0" + repr(tuple(shape)).encode() + b"\0")

    def array(self, name: str, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        self.header(name, arr.dtype, arr.shape)
        little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        self.update(memoryview(little.reshape(-1)).cast("B"))


def canonical(meta: Mapping[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def signatures(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], key: bytes | None) -> tuple[str, str | None]:
    """``(sha256, hmac_sha256 or None)`` of in-memory arrays (what :func:`save` stores)."""
    mac = None
    if key is not None:
        d = Digest(meta, key)
        for name in sorted(arrays):
            d.array(name, arrays[name])
        mac = d.mac.hexdigest()
        meta = {**meta, "hmac_sha256": mac}
    d = Digest(meta, None)
    for name in sorted(arrays):
        d.array(name, arrays[name])
    return d.sha.hexdigest(), mac


# ------------------------------------------------------------------------------ .npz
_BAD_ZIP = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, RuntimeError,
            NotImplementedError, struct.error, zlib.error)


def _corrupted(where: str, err: BaseException) -> FileFormatError:
    return FileFormatError(f"{where} is truncated or corrupted ({type(err).__name__}: {err})")


def _npy_header(fh, where: str, member: str) -> tuple[np.dtype, tuple[int, ...]]:
    """dtype and shape of a ``.npy`` stream, leaving it at the first data byte."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh, max_header_size=10000)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh, max_header_size=10000)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:  # the zip itself is damaged
        raise _corrupted(where, err) from None
    except (*_BAD_ZIP, SyntaxError, TypeError) as err:
        raise FileFormatError(f"{where}: member {member!r} has an unreadable array header ({err})") from None
    if dtype.hasobject:
        raise FileFormatError(f"{where} holds pickled objects, which tnmars never loads")
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in ALLOWED_KINDS:
        raise FileFormatError(f"{where}: array {member!r} has dtype {dtype}, which tnmars files never hold")
    if fortran and len(shape) > 1:
        raise FileFormatError(f"{where}: array {member!r} is stored in Fortran order, which tnmars never writes")
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise FileFormatError(f"{where}: array {member!r} has an invalid shape {shape}")
    return dtype, tuple(shape)


def _read_into(stream, arr: np.ndarray, where: str, name: str, feed: Callable[[memoryview], None]) -> np.ndarray:
    view = memoryview(arr.reshape(-1)).cast("B")
    got, total = 0, len(view)
    while got < total:
        n = stream.readinto(view[got : min(total, got + _CHUNK)])
        if not n:
            raise FileFormatError(f"{where} is truncated: array {name!r} ends after {got:,} of {total:,} bytes")
        feed(view[got : got + n])
        got += n
    if stream.read(1):
        raise FileFormatError(f"{where}: array {name!r} has more bytes than its header declares")
    return arr


def _list_npz(zf: zipfile.ZipFile, where: str, limit: int, max_bytes: int | None):
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise FileFormatError(f"{where} lists {len(infos):,} members; not a tnmars file")
    seen: set[str] = set()
    for info in infos:
        if info.filename in seen:
            raise FileFormatError(f"{where} has two members named {info.filename!r}")
        seen.add(info.filename)
        if not info.filename.endswith(".npy") or info.is_dir():
            raise FileFormatError(f"{where} has a member {info.filename!r} that is not a .npy array")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise FileFormatError(f"{where}: member {info.filename!r} uses a compression tnmars never writes")
        if info.flag_bits & 0x1:
            raise FileFormatError(f"{where}: member {info.filename!r} is encrypted")
    meta_info = next((i for i in infos if i.filename == META_KEY + ".npy"), None)
    if meta_info is None:
        raise FileFormatError(f"{where} is not a tnmars file (no tnmars metadata)")
    if meta_info.file_size > MAX_METADATA_BYTES + 4096:
        raise FileFormatError(f"{where} declares {meta_info.file_size:,} bytes of metadata; not a tnmars file")
    # the central directory's sizes bound what zipfile will inflate: check them first
    check_total(where, sum(i.file_size for i in infos if i is not meta_info), limit, max_bytes)

    entries: dict[str, ArrayEntry] = {}
    meta_raw = b""
    for info in infos:
        name = info.filename[: -len(".npy")]
        with zf.open(info) as stream:
            dtype, shape = _npy_header(stream, where, name)
            nbytes = prod(shape) * dtype.itemsize
            if nbytes != info.file_size - stream.tell():
                raise FileFormatError(
                    f"{where}: array {name!r} declares shape {shape} ({nbytes:,} bytes) but its member holds "
                    f"{info.file_size - stream.tell():,} bytes of data"
                )
            if info is meta_info:
                if dtype != np.uint8 or len(shape) != 1:
                    raise FileFormatError(f"{where} is not a tnmars file (no tnmars metadata)")
                meta_raw = bytes(_read_into(stream, np.empty(shape, np.uint8), where, name, lambda b: None))
                continue

        def read(feed, info=info, dtype=dtype, shape=shape, name=name):
            try:
                with zf.open(info) as s:
                    _npy_header(s, where, name)
                    arr = np.empty(shape, dtype=dtype)
                    if dtype.byteorder != ">":
                        return _read_into(s, arr, where, name, feed)
                    _read_into(s, arr, where, name, lambda b: None)
                    feed(memoryview(arr.astype(dtype.newbyteorder("<")).reshape(-1)).cast("B"))
                    return arr
            except FileFormatError:
                raise
            except _BAD_ZIP as err:
                raise _corrupted(where, err) from None

        entries[name] = ArrayEntry(name, dtype, shape, read)
    return meta_raw, entries


@contextlib.contextmanager
def open_npz(path: Path, where: str, limit: int, max_bytes: int | None) -> Iterator[tuple[bytes, dict[str, ArrayEntry]]]:
    """The metadata bytes and the (unread) arrays of a ``.npz`` file, sizes checked first."""
    with open(path, "rb") as fh:
        try:
            try:  # the central directory's entry count, read before the directory is listed
                end = zipfile._EndRecData(fh)
            except Exception:  # a private helper: if it ever changes, the checks below remain
                end = None
            if end is not None and end[zipfile._ECD_ENTRIES_TOTAL] > MAX_MEMBERS:
                raise FileFormatError(f"{where} lists {end[zipfile._ECD_ENTRIES_TOTAL]:,} members; not a tnmars file")
            zf = zipfile.ZipFile(fh)
            listing = _list_npz(zf, where, limit, max_bytes)
        except FileFormatError:  # a ValueError too: not to be wrapped as "corrupted"
            raise
        except _BAD_ZIP as err:
            raise _corrupted(where, err) from None
        with zf:
            yield listing


# ------------------------------------------------------------------------------ .safetensors
def safetensors_module():
    try:
        import safetensors
        import safetensors.numpy  # noqa: F401
    except ImportError as err:
        raise ImportError(".safetensors files need the safetensors package: pip install safetensors "
                          "(or use a .npz path)") from err
    return safetensors


def _list_safetensors(fh, where: str, limit: int, max_bytes: int | None):
    header = fh.metadata() or {}
    raw = header.get(META_KEY)
    if raw is None:
        raise FileFormatError(f"{where} is a safetensors file without tnmars metadata")
    entries: dict[str, ArrayEntry] = {}
    total = 0
    for name in fh.keys():
        piece = fh.get_slice(name)
        st_dtype = piece.get_dtype()
        if st_dtype not in _ST_DTYPES:
            raise FileFormatError(f"{where}: array {name!r} has dtype {st_dtype}, which tnmars files never hold")
        dtype = np.dtype(_ST_DTYPES[st_dtype]).newbyteorder("<")
        shape = tuple(int(n) for n in piece.get_shape())
        total += prod(shape) * dtype.itemsize

        def read(feed, name=name):
            try:
                arr = np.ascontiguousarray(fh.get_tensor(name))
            except Exception as err:  # safetensors raises its own error types
                raise FileFormatError(f"{where}: array {name!r} is unreadable ({type(err).__name__}: {err})") from None
            feed(memoryview(arr.astype(arr.dtype.newbyteorder("<"), copy=False).reshape(-1)).cast("B"))
            return arr

        entries[name] = ArrayEntry(name, dtype, shape, read)
    check_total(where, total, limit, max_bytes)
    return raw.encode("utf-8"), entries


@contextlib.contextmanager
def open_safetensors(path: Path, where: str, limit: int, max_bytes: int | None) -> Iterator[tuple[bytes, dict[str, ArrayEntry]]]:
    """The metadata bytes and the (unread) arrays of a ``.safetensors`` file, sizes checked first."""
    safe_open = safetensors_module().safe_open
    try:
        handle = safe_open(str(path), framework="numpy")
        fh = handle.__enter__()
        listing = _list_safetensors(fh, where, limit, max_bytes)
    except FileFormatError:
        raise
    except Exception as err:  # safetensors raises its own error types
        raise FileFormatError(f"{where} is not a readable safetensors file ({type(err).__name__}: {err})") from None
    try:
        yield listing
    finally:
        handle.__exit__(None, None, None)


def open_container(path: Path, where: str, max_bytes: int | None):
    """:func:`open_npz` or :func:`open_safetensors`, chosen by the file's first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    limit = memory_limit(path, max_bytes)
    if head[:4] == b"PK\x03\x04":
        return open_npz(path, where, limit, max_bytes)
    size = path.stat().st_size
    if len(head) >= 8:
        declared = struct.unpack("<Q", head[:8])[0]
        if 8 + declared <= size:
            return open_safetensors(path, where, limit, max_bytes)
        if declared <= _MAX_ST_HEADER and head[8:9] in (b"", b"{"):  # a header cut short
            raise FileFormatError(
                f"{where} is truncated or corrupted: its safetensors header declares {declared:,} bytes, "
                f"but only {size - 8:,} follow"
            )
    raise FileFormatError(
        f"{where} is not a tnmars file: tnmars files are .npz (zip) or .safetensors"
        + (" and this one is empty" if not head else "")
    )


# ------------------------------------------------------------------------------ writing
def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would race with threads)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def _mode_for(path: Path) -> int:
    """The permission bits the written file gets: those of the file it replaces (a private
    0600 file stays private), else what a new file gets under the umask."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        info = None
    if info is None or stat.S_ISLNK(info.st_mode):  # a link is replaced by a new file
        return 0o666 & ~_umask()
    return stat.S_IMODE(info.st_mode)


def write_atomic(path: Path, write: Callable[[Path, Any], None], shown: Path | None = None) -> None:
    """Write ``path`` through a new temporary file in the same folder, then ``os.replace``.

    The temporary name is unique and created exclusively (``mkstemp``), so a link planted at
    a predictable name is never followed, two writers never share a file, and readers see
    either the old file or the complete new one. The file keeps the permission bits of the
    one it replaces. An ``OSError`` names ``shown`` (default ``path``: the name the user gave;
    the temporary name would mean nothing to them), the original error chained.
    """
    shown = shown or path
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _write_error(shown, err, f"cannot create a file in folder {str(path.parent)!r}") from err
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(tmp, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError):
            raise _write_error(shown, err, "writing it failed") from err
        raise


def _write_error(path: Path, err: OSError, what: str) -> OSError:
    """``err`` (same class and errno) with a message that names the destination."""
    cls = type(OSError(err.errno, "")) if err.errno else OSError  # PermissionError for EACCES, ...
    new = cls(f"cannot save to {str(path)!r}: {what} ({err.strerror or err})")
    new.errno = err.errno
    return new
