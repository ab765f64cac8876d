"""Read a PyTorch state dict saved in the legacy (pre-1.6, non-zip) format, without PyTorch.

The format is a pickle stream: a magic number, a protocol version, system info, the
state dict (whose tensors refer to storages by key), the list of storage keys, then each
storage's raw little-endian bytes preceded by its element count. Only what a plain
``state_dict`` of dense CPU tensors needs is understood; anything else is an error. No
part of the file can name a class to construct beyond those (a replaced weights file runs
no code).
"""
from __future__ import annotations

import pickle
import struct
from collections import OrderedDict
from pathlib import Path

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
          "LongStorage": np.int64, "IntStorage": np.int32, "ByteStorage": np.uint8}


class _Storage:
    def __init__(self, dtype, key: str, numel: int):
        self.dtype, self.key, self.numel = dtype, key, numel
        self.data: np.ndarray | None = None


def _rebuild_tensor(storage: _Storage, offset: int, size, stride, *_):
    return ("tensor", storage, offset, tuple(size), tuple(stride))


class _PlainUnpickler(pickle.Unpickler):
    """Plain values only (numbers, strings, lists, dicts): the header and the storage keys."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"unsupported object in a PyTorch file's header: {module}.{name}")


def _plain(f):
    return _PlainUnpickler(f).load()


class _Unpickler(pickle.Unpickler):
    def __init__(self, f):
        super().__init__(f)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in DTYPES:
            return DTYPES[name]
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        raise pickle.UnpicklingError(f"unsupported object in a state dict: {module}.{name}")

    def persistent_load(self, pid):
        kind, dtype, key, _location, numel, view = pid
        if kind != "storage" or view is not None:
            raise pickle.UnpicklingError(f"unsupported storage reference {pid!r}")
        return self.storages.setdefault(key, _Storage(dtype, key, numel))


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a legacy ``.pth`` state dict as NumPy arrays, by name."""
    with open(path, "rb") as f:
        if _plain(f) != MAGIC:
            raise ValueError(f"{path}: not a legacy PyTorch file")
        _plain(f)  # protocol version
        _plain(f)  # system info
        unpickler = _Unpickler(f)
        state = unpickler.load()
        keys = _plain(f)
        for key in keys:
            storage = unpickler.storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            itemsize = np.dtype(storage.dtype).itemsize
            storage.data = np.frombuffer(f.read(numel * itemsize), dtype=storage.dtype)
    out = {}
    for name, (_, storage, offset, size, stride) in state.items():
        itemsize = storage.data.itemsize
        out[name] = np.lib.stride_tricks.as_strided(
            storage.data[offset:], shape=size, strides=[s * itemsize for s in stride]).copy()
    return out
