"""The registries that build model components by name, and plugin discovery.

Every component named in a config (MODEL.META_ARCHITECTURE, MODEL.BACKBONE.NAME,
MODEL.ROI_HEADS.NAME, ...) is looked up in one of these fvcore registries. A
registered object is either a class with a `from_config(cfg, *args)`
classmethod, or a function `(cfg, *args) -> nn.Module`; `build_from_registry`
calls whichever it is.

Third-party components register themselves when their module is imported.
Modules are imported from two places before a model is built:
  - the Python entry-point group `mrcnn_plugin.plugins` of installed packages;
  - the config list `PLUGINS` (module names).
"""
import importlib
import logging
from importlib import metadata
from typing import Any, Iterable, Set

from fvcore.common.registry import Registry

__all__ = [
    "META_ARCH_REGISTRY", "BACKBONE_REGISTRY", "PROPOSAL_GENERATOR_REGISTRY", "RPN_HEAD_REGISTRY",
    "ANCHOR_GENERATOR_REGISTRY", "ROI_HEADS_REGISTRY", "ROI_BOX_HEAD_REGISTRY", "ROI_MASK_HEAD_REGISTRY",
    "ROI_KEYPOINT_HEAD_REGISTRY", "build_from_registry", "load_plugins", "ENTRY_POINT_GROUP",
]

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = "Whole models (e.g. GeneralizedRCNN), built from cfg."
BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = "Backbones, built from (cfg, input_shape: ShapeSpec)."
PROPOSAL_GENERATOR_REGISTRY = Registry("PROPOSAL_GENERATOR")
PROPOSAL_GENERATOR_REGISTRY.__doc__ = "Proposal generators (e.g. RPN), built from (cfg, input_shape: dict)."
RPN_HEAD_REGISTRY = Registry("RPN_HEAD")
RPN_HEAD_REGISTRY.__doc__ = "RPN heads, built from (cfg, input_shape: list of ShapeSpec)."
ANCHOR_GENERATOR_REGISTRY = Registry("ANCHOR_GENERATOR")
ANCHOR_GENERATOR_REGISTRY.__doc__ = "Anchor generators, built from (cfg, input_shape: list of ShapeSpec)."
ROI_HEADS_REGISTRY = Registry("ROI_HEADS")
ROI_HEADS_REGISTRY.__doc__ = "ROI heads, built from (cfg, input_shape: dict of ShapeSpec)."
ROI_BOX_HEAD_REGISTRY = Registry("ROI_BOX_HEAD")
ROI_BOX_HEAD_REGISTRY.__doc__ = "Box heads, built from (cfg, input_shape: ShapeSpec)."
ROI_MASK_HEAD_REGISTRY = Registry("ROI_MASK_HEAD")
ROI_MASK_HEAD_REGISTRY.__doc__ = "Mask heads, built from (cfg, input_shape: ShapeSpec)."
ROI_KEYPOINT_HEAD_REGISTRY = Registry("ROI_KEYPOINT_HEAD")
ROI_KEYPOINT_HEAD_REGISTRY.__doc__ = "Keypoint heads, built from (cfg, input_shape: ShapeSpec)."

ENTRY_POINT_GROUP = "mrcnn_plugin.plugins"

logger = logging.getLogger(__name__)
_imported_plugins: Set[str] = set()


def build_from_registry(registry: Registry, name: str, cfg, *args: Any) -> Any:
    """Looks `name` up in `registry` and builds it from cfg and the extra args.

    Raises KeyError naming the registry, the name and what is registered.
    """
    try:
        obj = registry.get(name)
    except KeyError:
        known = ", ".join(sorted(k for k, _ in registry))
        raise KeyError(f"No component named {name!r} in registry {registry._name}; "
                       f"registered: {known}") from None
    if isinstance(obj, type) and hasattr(obj, "from_config"):
        return obj.from_config(cfg, *args)
    return obj(cfg, *args)


def _import_plugin(module_name: str, source: str) -> None:
    if module_name in _imported_plugins:
        return
    try:
        importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"Cannot import plugin module {module_name!r} named in {source}: {e}") from e
    _imported_plugins.add(module_name)
    logger.info("Loaded plugin module %s (from %s)", module_name, source)


def load_plugins(config_modules: Iterable[str] = ()) -> None:
    """Imports plugin modules from the entry-point group and from cfg.PLUGINS.

    Each module is imported once per process; a module that fails to import is
    an error naming it and where it was listed.
    """
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        _import_plugin(ep.value.split(":")[0], f"entry point {ep.name!r} of group {ENTRY_POINT_GROUP}")
    for name in config_modules:
        _import_plugin(name, "the config's PLUGINS list")
