"""Meta-architectures: whole models assembled from registered components."""
from ...registry import META_ARCH_REGISTRY, build_from_registry, load_plugins
from .rcnn import GeneralizedRCNN

__all__ = ["GeneralizedRCNN", "build_model"]


def build_model(cfg):
    """Builds the model named by MODEL.META_ARCHITECTURE on MODEL.DEVICE.

    Plugin modules (entry points and cfg.PLUGINS) are imported first, so their
    components can be named in the config. MODEL.CHANNELS_LAST (default True)
    lays the convolution weights out NHWC.
    """
    import torch

    load_plugins(cfg.get("PLUGINS", []))  # a config made by detectron2 itself has no PLUGINS key
    model = build_from_registry(META_ARCH_REGISTRY, cfg.MODEL.META_ARCHITECTURE, cfg)
    model = model.to(torch.device(cfg.MODEL.DEVICE))
    if cfg.MODEL.get("CHANNELS_LAST", True):
        model = model.to(memory_format=torch.channels_last)
    return model
