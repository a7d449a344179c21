"""Dataset names -> record loaders (`DatasetCatalog`) and -> metadata (`MetadataCatalog`).

A dataset is registered once under a name with a function that returns its
records (list of dicts in detectron2's format, see `datasets/coco.py`); configs
name datasets (DATASETS.TRAIN / TEST) and the loaders look them up here.
Metadata (class names, keypoint names, the source json, ...) is kept apart so
that it can be read without loading the records.
"""
import logging
from typing import Any, Callable, Dict, List, Optional

__all__ = ["DatasetCatalog", "MetadataCatalog", "Metadata"]

logger = logging.getLogger(__name__)


class _DatasetCatalog:
    """name -> zero-argument function returning list[dict] (the dataset's records)."""

    def __init__(self) -> None:
        self._loaders: Dict[str, Callable[[], List[dict]]] = {}

    def register(self, name: str, func: Callable[[], List[dict]]) -> None:
        """Registers `func` under `name`; a name can be registered only once."""
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register({name!r}, ...) needs a callable, got {type(func)}")
        if name in self._loaders:
            raise KeyError(f"Dataset {name!r} is already registered; remove it first to replace it")
        self._loaders[name] = func

    def get(self, name: str) -> List[dict]:
        """Calls the registered function of `name` and returns its records."""
        try:
            func = self._loaders[name]
        except KeyError:
            raise KeyError(f"Dataset {name!r} is not registered. Registered datasets: "
                           f"{', '.join(sorted(self._loaders)) or '(none)'}") from None
        return func()

    def list(self) -> List[str]:
        """Names of all registered datasets, in registration order."""
        return list(self._loaders)

    def remove(self, name: str) -> None:
        """Forgets `name` (KeyError if it is not registered)."""
        try:
            del self._loaders[name]
        except KeyError:
            raise KeyError(f"Dataset {name!r} is not registered") from None

    def __contains__(self, name: str) -> bool:
        return name in self._loaders

    def __repr__(self) -> str:
        return f"DatasetCatalog(registered datasets: {', '.join(self._loaders)})"


def _comparable(value: Any) -> Any:
    """Lists and tuples compare equal when their items do (json gives lists, code writes tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_comparable(v) for v in value)
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    return value


class Metadata:
    """Attributes describing one dataset; `name` is the dataset's name.

    Fields used in this package: thing_classes (list[str], index = contiguous
    class id), thing_dataset_id_to_contiguous_id (dict), keypoint_names,
    keypoint_flip_map (pairs of names that swap under a horizontal flip),
    keypoint_connection_rules (pairs of names joined in the skeleton),
    json_file, image_root, evaluator_type ("coco", ...). A field, once set,
    keeps its value: setting a different one is an error, because two parts
    of a program disagreeing on e.g. the class list is a bug.
    """

    def __init__(self, name: str, **kwargs: Any) -> None:
        object.__setattr__(self, "name", name)
        self.set(**kwargs)

    def __getattr__(self, key: str) -> Any:
        # Only called when normal lookup fails, i.e. for a field never set.
        if key.startswith("__"):
            raise AttributeError(key)
        keys = ", ".join(sorted(self.__dict__)) or "(none)"
        raise AttributeError(f"Metadata of dataset {self.__dict__.get('name')!r} has no field {key!r}. "
                             f"Set fields: {keys}")

    def __setattr__(self, key: str, value: Any) -> None:
        if key in self.__dict__:
            old = self.__dict__[key]
            if _comparable(old) != _comparable(value):
                raise ValueError(f"Metadata field {key!r} of dataset {self.name!r} is already set to "
                                 f"{old!r}; refusing to change it to {value!r}")
            return
        object.__setattr__(self, key, value)

    def set(self, **kwargs: Any) -> "Metadata":
        """Sets several fields at once; returns self."""
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        """The field's value, or `default` when it is not set."""
        return self.__dict__.get(key, default)

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if k != "name")
        return f"Metadata(name={self.name!r}, {fields})"


class _MetadataCatalog:
    """name -> `Metadata`, created empty on first access."""

    def __init__(self) -> None:
        self._metadata: Dict[str, Metadata] = {}

    def get(self, name: str) -> Metadata:
        """The metadata of `name` (a new empty `Metadata` the first time)."""
        if name not in self._metadata:
            self._metadata[name] = Metadata(name)
        return self._metadata[name]

    def list(self) -> List[str]:
        return list(self._metadata)

    def remove(self, name: str) -> None:
        self._metadata.pop(name, None)

    def __contains__(self, name: str) -> bool:
        return name in self._metadata


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()


def check_metadata_consistency(key: str, dataset_names: List[str]) -> Optional[Any]:
    """The value of metadata field `key`, which must be the same in every dataset named.

    Returns None when no dataset sets it; ValueError naming both datasets when two differ.
    """
    values = [(n, MetadataCatalog.get(n).get(key)) for n in dataset_names]
    values = [(n, v) for n, v in values if v is not None]
    if not values:
        return None
    first_name, first = values[0]
    for n, v in values[1:]:
        if _comparable(v) != _comparable(first):
            raise ValueError(f"Metadata field {key!r} differs between datasets {first_name!r} "
                             f"({first!r}) and {n!r} ({v!r})")
    return first
