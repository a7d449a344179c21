"""Reading `.pkl` weight files without running code from them.

A pickle is a small program: any global it names is imported and may be
called, so an untrusted `.pkl` could run `os.system(...)` the moment it is
loaded. Weight files need far less than that: dicts, lists, strings, numbers
and numpy arrays. `RestrictedUnpickler` resolves only the globals that numpy
uses to rebuild arrays and scalars, and refuses everything else before it is
imported, naming the file and the global.
"""
import _compat_pickle
import codecs
import io
import pickle
from typing import Any, BinaryIO, Callable, Dict, Tuple

import numpy as np

__all__ = ["RestrictedUnpickler", "UnsafePickleError", "load_pickle", "ALLOWED_GLOBALS"]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowed set (it may try to run code)."""


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """`_codecs.encode` restricted to latin-1.

    Python 3 writes `bytes` in protocol-2 pickles (numpy's array payload among
    them) as `_codecs.encode(text, "latin1")`; that is the only use allowed, so
    no other codec can be reached through this entry.
    """
    if codecs.lookup(encoding).name != "iso8859-1" or not isinstance(obj, str):
        raise UnsafePickleError(f"_codecs.encode is only allowed with latin-1 text, got encoding {encoding!r}")
    return codecs.encode(obj, "latin-1", errors)


def _numpy_global(module: str, name: str) -> Callable[[], Any]:
    """A lazy lookup, so numpy 1.x (numpy.core) and 2.x (numpy._core) files both resolve."""
    def get() -> Any:
        import importlib

        for candidate in (module, module.replace("numpy.core", "numpy._core"),
                          module.replace("numpy._core", "numpy.core")):
            try:
                return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
        raise UnsafePickleError(f"{module}.{name} is allowed but not available in this numpy")
    return get


# (module, name) -> factory of the object the pickle may use. Array
# reconstruction (protocols 0-4 and 5), dtypes, numpy scalars, OrderedDict,
# latin-1 bytes, and the containers that protocols 0-3 build through globals
# (bytes, bytearray, set, frozenset; the others are pickle opcodes).
ALLOWED_GLOBALS: Dict[Tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,
    ("collections", "OrderedDict"): lambda: __import__("collections").OrderedDict,
    ("builtins", "bytes"): lambda: bytes,
    ("builtins", "bytearray"): lambda: bytearray,
    ("builtins", "set"): lambda: set,
    ("builtins", "frozenset"): lambda: frozenset,
}
for _core in ("numpy.core", "numpy._core"):
    ALLOWED_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = _numpy_global(f"{_core}.multiarray", "_reconstruct")
    ALLOWED_GLOBALS[(f"{_core}.multiarray", "scalar")] = _numpy_global(f"{_core}.multiarray", "scalar")
    ALLOWED_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = _numpy_global(f"{_core}.numeric", "_frombuffer")


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose `find_class` only hands out `ALLOWED_GLOBALS`.

    `source` names the file in error messages. Python 2 pickles (Detectron's)
    load with encoding="latin1", which turns their byte strings into text and
    keeps numpy payloads intact.
    """

    def __init__(self, file: BinaryIO, source: str = "<pickle>"):
        super().__init__(file, encoding="latin1")
        self.source = source

    @staticmethod
    def _python3_name(module: str, name: str) -> Tuple[str, str]:
        """Python 2 pickles name Python 2 modules (`__builtin__`, `commands`): use the Python 3 names."""
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        return _compat_pickle.IMPORT_MAPPING.get(module, module), name

    def find_class(self, module: str, name: str) -> Any:
        module, name = self._python3_name(module, name)
        factory = ALLOWED_GLOBALS.get((module, name))
        if factory is None:
            raise UnsafePickleError(
                f"{self.source}: refusing to load global '{module}.{name}'. Weight files only need numpy "
                "arrays and plain containers; this pickle would import (and could run) other code, "
                "so it was not loaded.")
        return factory()


def _reject_object_arrays(obj: Any, source: str) -> None:
    """Object arrays hold arbitrary Python objects, not weights: refuse them too."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, np.ndarray) and item.dtype.hasobject:
            raise UnsafePickleError(f"{source}: contains a numpy array of Python objects, not weights")


def load_pickle(data: bytes, source: str) -> Any:
    """Unpickles `data` (the bytes of a file named `source`) with `RestrictedUnpickler`."""
    obj = RestrictedUnpickler(io.BytesIO(data), source).load()
    _reject_object_arrays(obj, source)
    return obj
