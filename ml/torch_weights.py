"""Read PyTorch legacy-format `.pth` state dicts with numpy only (restricted unpickler, no torch)."""

from __future__ import annotations

import pickle
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsupportedCheckpointError(ValueError):
    """The file is not a legacy-format PyTorch state dict of plain tensors."""


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    def __init__(self, dtype: np.dtype, size: int) -> None:
        self.dtype, self.size = dtype, size
        self.array: npt.NDArray[Any] | None = None


class _TensorRef:
    def __init__(
        self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialise(self) -> npt.NDArray[Any]:
        base = self.storage.array
        if base is None:
            raise UnsupportedCheckpointError("storage data missing")
        if not self.size:
            return np.array(base[self.offset])
        itemsize = base.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[self.offset :],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view)


def _rebuild_tensor(storage: _Storage, offset: int, size: Any, stride: Any, *_: Any) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: _TensorRef, *_: Any) -> _TensorRef:
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the handful of globals a state dict needs; anything else is refused."""

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]) -> None:
        super().__init__(file, encoding="utf-8")
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsupportedCheckpointError(f"refusing to unpickle {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or pid[0] != "storage":
            raise UnsupportedCheckpointError(f"unsupported persistent id {pid!r:.60}")
        storage_type, key, _location, size = pid[1:5]
        view_metadata = pid[5] if len(pid) > 5 else None
        if view_metadata is not None:
            raise UnsupportedCheckpointError("storage views are not supported")
        if key not in self._storages:
            self._storages[key] = _Storage(storage_type.dtype, int(size))
        return self._storages[key]


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise UnsupportedCheckpointError(f"refusing to unpickle {module}.{name}")


def load_state_dict(path: str | Path) -> OrderedDict[str, npt.NDArray[Any]]:
    """Legacy (non-zip) `.pth` file -> OrderedDict name -> numpy array (copied, C-contiguous)."""
    storages: dict[str, _Storage] = {}
    with Path(path).open("rb") as fh:
        if _PlainUnpickler(fh).load() != _LEGACY_MAGIC:
            raise UnsupportedCheckpointError("not a legacy-format PyTorch checkpoint")
        _PlainUnpickler(fh).load()  # protocol version
        _PlainUnpickler(fh).load()  # sys info
        result = _RestrictedUnpickler(fh, storages).load()
        keys = _PlainUnpickler(fh).load()
        for key in keys:
            storage = storages[key]
            (count,) = struct.unpack("<q", fh.read(8))
            if count != storage.size:
                raise UnsupportedCheckpointError("storage size mismatch")
            raw = fh.read(count * storage.dtype.itemsize)
            storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    if not isinstance(result, dict):
        raise UnsupportedCheckpointError("checkpoint is not a state dict")
    out: OrderedDict[str, npt.NDArray[Any]] = OrderedDict()
    for name, value in result.items():
        if isinstance(value, _TensorRef):
            out[name] = value.materialise()
    return out
