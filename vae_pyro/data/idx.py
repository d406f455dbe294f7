"""The IDX file format of MNIST and Fashion-MNIST (LeCun et al.), read and written.

Layout: two zero bytes, a type byte (0x08 = unsigned byte), a byte with the number of
dimensions d, then d big-endian int32 sizes, then the data in C order. Files may be gzipped.
"""

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from vae_pyro.errors import VaeError

UBYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"


def _raw_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise VaeError(f"{path}: corrupt gzip data ({e}); download the file again") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (optionally gzipped) into a uint8 array of its shape."""
    path = Path(path)
    try:
        data = _raw_bytes(path)
    except FileNotFoundError:
        raise VaeError(f"{path}: no such file; check the path or --data-dir") from None
    except OSError as e:
        raise VaeError(f"{path}: cannot read ({e.strerror}); check its permissions") from None
    if len(data) < 4 or data[:2] != b"\0\0":
        raise VaeError(f"{path}: not an IDX file (bad magic number); download the file again")
    dtype, ndim = data[2], data[3]
    if dtype != UBYTE:
        raise VaeError(f"{path}: IDX type 0x{dtype:02x} is not unsigned byte (0x08); use MNIST-style image/label files")
    if ndim == 0:
        raise VaeError(f"{path}: IDX file with 0 dimensions; download the file again")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise VaeError(f"{path}: truncated IDX header; download the file again")
    shape = struct.unpack(f">{ndim}i", data[4:header])
    size = int(np.prod(shape, dtype=np.int64))
    if min(shape) < 0 or len(data) - header != size:
        raise VaeError(
            f"{path}: IDX header says shape {shape} ({size} bytes) but the file holds "
            f"{len(data) - header} bytes of data; the file is truncated or corrupt, download it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, gzipped when the name ends in ``.gz``."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
