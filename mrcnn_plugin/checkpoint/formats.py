"""Checkpoint files: reading every supported format into one shape, and writing atomically.

Formats read by `read_checkpoint` (chosen by file extension, then by content):

    file      content                                              format tag
    .pth      {"model": state_dict, ...} (detectron2, this package) "pth"
    .pth      a bare torchvision detection state_dict (read as       "torchvision_detection"
              torchvision's released weights: batch-norm eps 0)
    .pth      a bare torchvision ImageNet ResNet state_dict        "torchvision_resnet"
    .pkl      {"model": {name: ndarray}, "__author__": ...}        "detectron2_pkl" (model zoo)
    .pkl      {"blobs": {blob: ndarray}, ...} or {blob: ndarray}   "detectron_pkl" (Caffe2 Detectron,
              or a model-zoo dict whose __author__ is "Caffe2"      MSRA ImageNet backbones)

`.pth` files are read with `torch.load(weights_only=True)` and `.pkl` files with
a restricted unpickler (`safe_pickle`), so neither can run code. Anything that
cannot be read is a `CheckpointError` naming the file.

Writers (`save_pth`, `save_model_zoo_pkl`, `save_detectron_pkl`) write to a
temporary file in the destination directory, flush and fsync it, and move it
over the destination with os.replace: a crash leaves the old file or the new
one, never a truncated mix.
"""
import os
import pickle
import tempfile
from typing import Any, BinaryIO, Callable, Dict, Mapping, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from .detectron_names import detectron2_to_detectron, detectron_to_detectron2
from .safe_pickle import UnsafePickleError, load_pickle
from .torchvision_names import (is_torchvision_detection, is_torchvision_resnet,
                                torchvision_detection_to_detectron2, torchvision_resnet_to_detectron2)

__all__ = ["CheckpointError", "read_checkpoint", "atomic_write", "save_pth", "save_model_zoo_pkl",
           "save_detectron_pkl", "to_state_dict", "PICKLE_EXTENSIONS"]

PICKLE_EXTENSIONS = (".pkl", ".pickle")


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: unreadable, truncated, unsafe or of an unknown layout."""


# -----------------------------------------------------------------------------
# Writing
# -----------------------------------------------------------------------------
def _fsync_directory(directory: str) -> None:
    """Makes a rename durable; not possible on every platform, where it is skipped."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[BinaryIO], None], path_manager: Optional[Any] = None) -> None:
    """Writes a file through `write(binary_file)` so that `path` is replaced all at once.

    Local paths get a temporary file in the same directory (same file system,
    so os.replace is atomic), flushed and fsynced before the rename; on any
    error the temporary file is removed and `path` is untouched. A URI of
    another iopath handler ("scheme://...") is written through `path_manager`
    directly: such stores have their own semantics.
    """
    if "://" in path and not path.startswith("file://"):
        if path_manager is None:
            raise ValueError(f"{path}: a path_manager is needed to write to this URI")
        with path_manager.open(path, "wb") as f:
            write(f)
        return
    if path.startswith("file://"):
        path = path[len("file://"):]
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_directory(directory)


def to_state_dict(model_or_state_dict: Union[nn.Module, Mapping[str, Any]]) -> Dict[str, Any]:
    """A module's state_dict, or a mapping as a plain dict."""
    if isinstance(model_or_state_dict, nn.Module):
        return dict(model_or_state_dict.state_dict())
    return dict(model_or_state_dict)


def _to_numpy(state_dict: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """Tensors -> numpy arrays (CPU copies); arrays pass through."""
    out = {}
    for k, v in state_dict.items():
        out[k] = v.detach().cpu().numpy() if isinstance(v, Tensor) else np.asarray(v)
    return out


def _write_pickle(obj: Any, path: str) -> None:
    atomic_write(path, lambda f: pickle.dump(obj, f, protocol=4))


def save_pth(model_or_state_dict: Union[nn.Module, Mapping[str, Any]], path: str, **extra: Any) -> None:
    """Writes {"model": state_dict, **extra} with torch.save, atomically.

    extra values should be what torch.load(weights_only=True) reads back:
    tensors, numbers, strings and containers of them.
    """
    data = {"model": to_state_dict(model_or_state_dict)}
    data.update(extra)
    atomic_write(path, lambda f: torch.save(data, f))


def save_model_zoo_pkl(model_or_state_dict: Union[nn.Module, Mapping[str, Any]], path: str,
                       author: str = "mrcnn_plugin") -> None:
    """Writes a detectron2 model-zoo `.pkl`: {"model": {name: ndarray}, "__author__": author}."""
    _write_pickle({"model": _to_numpy(to_state_dict(model_or_state_dict)), "__author__": author}, path)


def save_detectron_pkl(model_or_state_dict: Union[nn.Module, Mapping[str, Any]], path: str) -> None:
    """Writes a Detectron (Caffe2) weights file {"blobs": {blob: ndarray}} with Detectron's names
    and background-first class layout (see `detectron_names`)."""
    blobs = detectron2_to_detectron(_to_numpy(to_state_dict(model_or_state_dict)))
    _write_pickle({"blobs": blobs}, path)


# -----------------------------------------------------------------------------
# Reading
# -----------------------------------------------------------------------------
def _read_bytes(path: str) -> bytes:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint file {path} does not exist")
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise CheckpointError(f"{path}: the file is empty")
    return data


def _weights_only_reason(message: str) -> str:
    """The informative line of torch's weights_only refusal (which global it met), not its advice."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line or "WeightsUnpickler" in line:
            return line
    return lines[-1] if lines else message


def _load_pth(path: str) -> Any:
    """torch.load without code execution; every failure becomes a CheckpointError naming the file."""
    head = _read_bytes(path)[:16]
    # torch.save writes a zip archive; files from torch < 1.6 are pickles (protocol 2: b"\x80\x02").
    if not head.startswith(b"PK\x03\x04") and not head.startswith(b"\x80"):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle; it starts "
                              f"with {head!r})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused: it holds objects other than tensors, numbers, strings and plain containers, "
            f"and loading them could run code ({_weights_only_reason(str(e))})") from e
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, KeyError, IndexError) as e:
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or damaged?): "
                              f"{type(e).__name__}: {first_line}") from e


def _load_pkl(path: str) -> Any:
    data = _read_bytes(path)
    try:
        return load_pickle(data, path)
    except UnsafePickleError as e:
        raise CheckpointError(str(e)) from e
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable pickle (truncated or another format?): "
                              f"{type(e).__name__}: {e}") from e


def _check_tensors(state_dict: Mapping[str, Any], path: str) -> Dict[str, Tensor]:
    """Every value as a Tensor; anything else is an error naming the key."""
    out: Dict[str, Tensor] = {}
    for k, v in state_dict.items():
        if isinstance(v, Tensor):
            out[k] = v
        elif isinstance(v, np.ndarray):
            out[k] = torch.from_numpy(np.array(v))  # a writable copy, as from_numpy expects
        else:
            raise CheckpointError(f"{path}: entry {k!r} of the weights is a {type(v).__name__}, not an array")
    return out


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, (Tensor, np.ndarray)) for k, v in obj.items())


def read_checkpoint(path: str) -> Dict[str, Any]:
    """Reads any supported checkpoint file (module docstring) into one layout.

    Returns a dict with "model" (detectron2 name -> Tensor), "format" (the tag),
    "matching_heuristics" (True when names may lack the model's prefixes and
    should be matched by suffix), "__author__" when known, and the file's
    other top-level entries (e.g. "optimizer", "iteration" of a .pth).
    """
    if path.lower().endswith(PICKLE_EXTENSIONS):
        obj = _load_pkl(path)
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{path}: a pickle of {type(obj).__name__}, not a dict of weights")
        if "model" in obj and obj.get("__author__") != "Caffe2":
            if not _is_state_dict(obj["model"]):
                raise CheckpointError(f"{path}: its 'model' entry is not a dict of arrays")
            out = {k: v for k, v in obj.items() if k != "model"}
            out.update(model=_check_tensors(obj["model"], path), format="detectron2_pkl",
                       matching_heuristics=True)
            return out
        blobs = obj.get("blobs", obj.get("model", obj))
        # Detectron files may carry non-weight entries (a config string): keep the arrays.
        blobs = {k: v for k, v in blobs.items() if isinstance(v, np.ndarray)} if isinstance(blobs, Mapping) else {}
        if not _is_state_dict(blobs):
            raise CheckpointError(f"{path}: neither a detectron2 model-zoo file ('model' and '__author__') nor "
                                  "Detectron blobs (a dict of numpy arrays)")
        converted, _ = detectron_to_detectron2(blobs)
        return {"model": _check_tensors(converted, path), "format": "detectron_pkl", "__author__": "Caffe2",
                "matching_heuristics": True}

    obj = _load_pth(path)
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        out = dict(obj)
        out["model"] = _check_tensors(obj["model"], path)
        out.setdefault("format", "pth")
    elif _is_state_dict(obj):
        out = {"model": _check_tensors(obj, path), "format": "pth"}
    else:
        raise CheckpointError(f"{path}: a PyTorch file, but neither a state_dict nor a dict with a 'model' "
                              "state_dict")
    state_dict = out["model"]
    if is_torchvision_detection(state_dict):
        out.update(model=torchvision_detection_to_detectron2(state_dict), format="torchvision_detection",
                   __author__="torchvision")
    elif is_torchvision_resnet(state_dict):
        out.update(model=torchvision_resnet_to_detectron2(state_dict), format="torchvision_resnet",
                   __author__="torchvision", matching_heuristics=True)
    return out
