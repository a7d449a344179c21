"""The detectron2 bridge: this package's components in detectron2's registries, under `Mrcnn` names.

    import detectron2
    from mrcnn_plugin.integrations.detectron2 import register
    register()            # MrcnnGeneralizedRCNN, Mrcnnbuild_resnet_fpn_backbone, MrcnnStandardROIHeads, ...
    cfg.MODEL.META_ARCHITECTURE = "MrcnnGeneralizedRCNN"
    model = detectron2.modeling.build_model(cfg)

Every entry of this package's registries (including plugins and the
Torchvision* components, once their modules are imported) is registered into
the detectron2 registry of the same name as "Mrcnn" + its name. What is
registered is a builder with detectron2's calling convention
(`(cfg)` for a meta-architecture, `(cfg, input_shape)` for the others) that
builds this package's module and gives it detectron2's interface:

  meta-architecture   forward(batched_inputs) on detectron2 inputs (their
                      `instances` converted by duck typing), outputs as
                      detectron2 Instances (when detectron2 is importable).
  backbone            `padding_constraints` added; forward / output_shape /
                      size_divisibility are already detectron2's.
  proposal generator  forward(images: ImageList, features, gt_instances) ->
                      (proposals as Instances, losses).
  ROI heads           forward(images, features, proposals, targets) ->
                      (results as Instances, losses); forward_with_given_boxes
                      on Instances too.
  box head            `output_shape` as a property (detectron2 reads it so).
  mask / keypoint     forward(x, instances): losses in training, predictions
  head                written into `instances` in inference.
  anchor generator    returns detectron2 Boxes per level, has `box_dim`.
  RPN head            unchanged (same interface).

Parameter names are unchanged (the adapters subclass the modules' own
classes), so detectron2 checkpoints keep loading. Component names in the
config may carry the Mrcnn prefix or not: a component builds its children from
this package's registries, with the prefix stripped.
"""
import logging
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from .. import registry as mrcnn_registry
from ..layers import ShapeSpec
from ..modeling.roi_heads.keypoint_head import heatmaps_to_keypoints
from ..modeling.roi_heads.mask_head import mask_rcnn_inference
from ..structures import BitMasks, Boxes, Instances, Keypoints, PolygonMasks

__all__ = ["register", "PREFIX", "REGISTRY_NAMES", "to_mrcnn_instances", "to_detectron2_instances"]

logger = logging.getLogger(__name__)

PREFIX = "Mrcnn"
REGISTRY_NAMES = ("META_ARCH_REGISTRY", "BACKBONE_REGISTRY", "PROPOSAL_GENERATOR_REGISTRY", "RPN_HEAD_REGISTRY",
                  "ANCHOR_GENERATOR_REGISTRY", "ROI_HEADS_REGISTRY", "ROI_BOX_HEAD_REGISTRY",
                  "ROI_MASK_HEAD_REGISTRY", "ROI_KEYPOINT_HEAD_REGISTRY")

# Config keys that name components; their Mrcnn prefix is stripped before building.
_NAME_KEYS = (("MODEL", "META_ARCHITECTURE"), ("MODEL", "BACKBONE", "NAME"), ("MODEL", "PROPOSAL_GENERATOR", "NAME"),
              ("MODEL", "RPN", "HEAD_NAME"), ("MODEL", "ANCHOR_GENERATOR", "NAME"), ("MODEL", "ROI_HEADS", "NAME"),
              ("MODEL", "ROI_BOX_HEAD", "NAME"), ("MODEL", "ROI_MASK_HEAD", "NAME"),
              ("MODEL", "ROI_KEYPOINT_HEAD", "NAME"))


# -----------------------------------------------------------------------------
# Structures: detectron2's <-> this package's, by duck typing
# -----------------------------------------------------------------------------
def _detectron2_structures() -> Tuple[type, type]:
    """(Instances, Boxes) of detectron2 when it is importable, else this package's (same interface)."""
    try:
        from detectron2.structures import Boxes as D2Boxes
        from detectron2.structures import Instances as D2Instances
        return D2Instances, D2Boxes
    except ImportError:
        return Instances, Boxes


def _to_mrcnn_field(name: str, value: Any) -> Any:
    """A detectron2 field as this package's type, recognised by its attributes, field name and class name:
    `.polygons` -> PolygonMasks; `.tensor` -> Boxes (`*boxes`), BitMasks (`*masks`) or Keypoints
    (`*keypoints`). Tensors and this package's structures pass through."""
    if isinstance(value, (Tensor, Boxes, PolygonMasks, BitMasks, Keypoints)):
        return value
    if hasattr(value, "polygons"):
        return PolygonMasks(value.polygons)
    if hasattr(value, "tensor"):
        kind = type(value).__name__
        if name.endswith("boxes") or kind.endswith("Boxes"):
            return Boxes(value.tensor)
        if name.endswith("masks") or kind.endswith("BitMasks"):
            return BitMasks(value.tensor)
        if name.endswith("keypoints") or kind.endswith("Keypoints"):
            return Keypoints(value.tensor)
    return value


def to_mrcnn_instances(instances: Any) -> Instances:
    """detectron2 Instances (or anything with image_size and get_fields()) as this package's Instances."""
    if isinstance(instances, Instances):
        return instances
    out = Instances(tuple(instances.image_size))
    for name, value in instances.get_fields().items():
        out.set(name, _to_mrcnn_field(name, value))
    return out


def to_detectron2_instances(result: Any, image_size: Tuple[int, int]) -> Any:
    """A result dict of tensors (or this package's Instances) as detectron2 Instances, pred_boxes as Boxes.

    Without detectron2 installed, this package's Instances / Boxes are used (same interface).
    """
    d2_instances, d2_boxes = _detectron2_structures()
    fields = result.get_fields() if isinstance(result, Instances) else result
    out = d2_instances(tuple(image_size))
    for name, value in fields.items():
        if isinstance(value, Boxes):
            value = value.tensor
        out.set(name, d2_boxes(value) if name in ("pred_boxes", "proposal_boxes") else value)
    return out


def _to_shape_spec(shape: Any) -> Any:
    """detectron2 ShapeSpec(s) (dataclass or namedtuple; in a dict or list) as this package's ShapeSpec."""
    if isinstance(shape, Mapping):
        return {k: _to_shape_spec(v) for k, v in shape.items()}
    if isinstance(shape, (list, tuple)) and not hasattr(shape, "_fields"):
        return [_to_shape_spec(s) for s in shape]
    if isinstance(shape, ShapeSpec) or not hasattr(shape, "channels"):
        return shape
    return ShapeSpec(channels=shape.channels, height=getattr(shape, "height", None),
                     width=getattr(shape, "width", None), stride=getattr(shape, "stride", None))


def _image_sizes(images: Any) -> List[Tuple[int, int]]:
    return [(int(h), int(w)) for h, w in images.image_sizes]


# -----------------------------------------------------------------------------
# Interface adapters (mixins put in front of a module's own class)
# -----------------------------------------------------------------------------
class _MetaArchAdapter:
    """detectron2 inputs in, detectron2 Instances out."""

    def forward(self, batched_inputs: List[Dict[str, Any]]):
        if self.training:
            inputs = [dict(x, instances=to_mrcnn_instances(x["instances"])) if "instances" in x else x
                      for x in batched_inputs]
            return super().forward(inputs)
        outputs = super().forward(batched_inputs)
        return [{"instances": to_detectron2_instances(o["instances"], o["instances"].image_size)} for o in outputs]


class _BackboneAdapter:
    """detectron2's GeneralizedRCNN pads inputs with `backbone.padding_constraints`."""

    padding_constraints: Dict[str, int] = {}


class _ProposalGeneratorAdapter:
    """forward(images, features, gt_instances) -> (proposals as Instances, losses)."""

    def forward(self, images: Any, features: Dict[str, Tensor], gt_instances: Optional[List[Any]] = None):
        image_sizes = _image_sizes(images)
        if self.training:
            if gt_instances is None:
                raise ValueError("The RPN needs gt_instances in training")
            boxes, logits, losses = self.forward_train(image_sizes, features,
                                                       [to_mrcnn_instances(g) for g in gt_instances])
        else:
            boxes, logits = super().forward(image_sizes, features)
            losses = {}
        proposals = [to_detectron2_instances({"proposal_boxes": b, "objectness_logits": s}, size)
                     for b, s, size in zip(boxes, logits, image_sizes)]
        return proposals, losses


class _ROIHeadsAdapter:
    """forward(images, features, proposals, targets) -> (results as Instances, losses)."""

    def forward(self, images: Any, features: Dict[str, Tensor], proposals: List[Any],
                targets: Optional[List[Any]] = None):
        if self.training:
            if targets is None:
                raise ValueError("ROI heads need targets in training")
            losses = self.forward_train(features, [to_mrcnn_instances(p) for p in proposals],
                                        [to_mrcnn_instances(t) for t in targets])
            return proposals, losses
        image_sizes = _image_sizes(images)
        results = super().forward(image_sizes, features, [p.proposal_boxes.tensor for p in proposals])
        return [to_detectron2_instances(r, size) for r, size in zip(results, image_sizes)], {}

    def forward_with_given_boxes(self, features: Dict[str, Tensor], instances: List[Any]):
        """detectron2's form (Instances with pred_boxes / pred_classes) or this package's (dicts)."""
        if all(isinstance(i, dict) for i in instances):
            return super().forward_with_given_boxes(features, instances)
        dicts = [{k: (v.tensor if k == "pred_boxes" else v) for k, v in i.get_fields().items()} for i in instances]
        results = super().forward_with_given_boxes(features, dicts)
        return [to_detectron2_instances(r, i.image_size) for r, i in zip(results, instances)]


class _BoxHeadAdapter:
    """detectron2 reads `box_head.output_shape` as a property."""

    @property
    def output_shape(self) -> ShapeSpec:
        for base in type(self).__mro__[2:]:
            method = base.__dict__.get("output_shape")
            if method is not None:
                return method(self)
        raise AttributeError("output_shape")


class _MaskHeadAdapter:
    """forward(x, instances): {"loss_mask"} in training; pred_masks [N, 1, M, M] set in inference."""

    def forward(self, x: Tensor, instances: Optional[List[Any]] = None):
        logits = super().forward(x)
        if instances is None:
            return logits
        if self.training:
            return self.losses(logits, [to_mrcnn_instances(i) for i in instances])
        classes = torch.cat([i.pred_classes for i in instances]) if instances else logits.new_zeros(0).long()
        probs = mask_rcnn_inference(logits, classes, getattr(self, "loss_type", "sigmoid"))
        for inst, p in zip(instances, probs.split([len(i) for i in instances])):
            inst.pred_masks = p
        return instances


class _KeypointHeadAdapter:
    """forward(x, instances): {"loss_keypoint"} in training; pred_keypoints (x, y, score) and
    pred_keypoint_heatmaps set in inference."""

    def forward(self, x: Tensor, instances: Optional[List[Any]] = None):
        logits = super().forward(x)
        if instances is None:
            return logits
        if self.training:
            return self.losses(logits, [to_mrcnn_instances(i) for i in instances])
        boxes = torch.cat([i.pred_boxes.tensor for i in instances]) if instances else logits.new_zeros((0, 4))
        keypoints = heatmaps_to_keypoints(logits, boxes)[:, :, [0, 1, 3]]
        counts = [len(i) for i in instances]
        for inst, kp, heat in zip(instances, keypoints.split(counts), logits.split(counts)):
            inst.pred_keypoints = kp
            inst.pred_keypoint_heatmaps = heat
        return instances


class _AnchorGeneratorAdapter:
    """detectron2's RPN wants one Boxes per level and reads `box_dim`."""

    box_dim = 4

    def forward(self, features: List[Tensor]):
        _, d2_boxes = _detectron2_structures()
        return [d2_boxes(a) for a in super().forward(features)]


_ADAPTERS: Dict[str, Optional[type]] = {
    "META_ARCH_REGISTRY": _MetaArchAdapter, "BACKBONE_REGISTRY": _BackboneAdapter,
    "PROPOSAL_GENERATOR_REGISTRY": _ProposalGeneratorAdapter, "RPN_HEAD_REGISTRY": None,
    "ANCHOR_GENERATOR_REGISTRY": _AnchorGeneratorAdapter, "ROI_HEADS_REGISTRY": _ROIHeadsAdapter,
    "ROI_BOX_HEAD_REGISTRY": _BoxHeadAdapter, "ROI_MASK_HEAD_REGISTRY": _MaskHeadAdapter,
    "ROI_KEYPOINT_HEAD_REGISTRY": _KeypointHeadAdapter,
}
_ADAPTED_CLASSES: Dict[Tuple[type, type], type] = {}


def _adapt(module: nn.Module, adapter: Optional[type]) -> nn.Module:
    """Puts `adapter` in front of the module's class (a cached subclass); names and weights are unchanged."""
    if adapter is None or isinstance(module, adapter):
        return module
    key = (adapter, type(module))
    if key not in _ADAPTED_CLASSES:
        cls = type(module)
        _ADAPTED_CLASSES[key] = type(PREFIX + cls.__name__, (adapter, cls),
                                     {"__module__": __name__, "__doc__": cls.__doc__})
    module.__class__ = _ADAPTED_CLASSES[key]
    return module


# -----------------------------------------------------------------------------
# Registration
# -----------------------------------------------------------------------------
def _strip_prefixes(cfg: Any) -> Any:
    """A copy of cfg whose component names lack the Mrcnn prefix (this package's registry names)."""
    cfg = cfg.clone()
    cfg.defrost()
    for path in _NAME_KEYS:
        node = cfg
        for part in path[:-1]:
            node = getattr(node, part, None)
            if node is None:
                break
        if node is None or not hasattr(node, path[-1]):
            continue
        value = getattr(node, path[-1])
        if isinstance(value, str) and value.startswith(PREFIX):
            setattr(node, path[-1], value[len(PREFIX):])
    return cfg


def _builder(registry_name: str, name: str) -> Callable[..., nn.Module]:
    """detectron2-style builder of this package's component `name` from `registry_name`."""
    our_registry = getattr(mrcnn_registry, registry_name)

    def build(cfg: Any, *args: Any) -> nn.Module:
        module = mrcnn_registry.build_from_registry(our_registry, name, _strip_prefixes(cfg),
                                                    *[_to_shape_spec(a) for a in args])
        return _adapt(module, _ADAPTERS[registry_name])

    build.__name__ = build.__qualname__ = PREFIX + name
    build.__doc__ = f"Builds mrcnn_plugin's {name} ({registry_name}) with detectron2's interface."
    return build


def _detectron2_registries() -> Optional[Dict[str, Any]]:
    try:
        import detectron2.modeling as d2_modeling
    except ImportError:
        return None
    return {name: getattr(d2_modeling, name) for name in REGISTRY_NAMES}


def register(registries: Optional[Mapping[str, Any]] = None) -> Dict[str, List[str]]:
    """Registers every component of this package into detectron2's registries as "Mrcnn" + name.

    registries: registry name (REGISTRY_NAMES) -> a registry with detectron2's
    (fvcore's) API; None imports detectron2.modeling's. Returns the names
    registered per registry; {} when registries is None and detectron2 is not
    importable. Calling it again registers only what is new (e.g. components of
    a plugin imported since), so it is safe to call more than once.
    """
    from . import torchvision as _torchvision_components  # noqa: F401  (registers the Torchvision* components)

    if registries is None:
        registries = _detectron2_registries()
        if registries is None:
            logger.warning("detectron2 is not importable: no component registered")
            return {}
    registered: Dict[str, List[str]] = {}
    for registry_name in REGISTRY_NAMES:
        target = registries.get(registry_name)
        if target is None:
            continue
        names = []
        for name, _ in getattr(mrcnn_registry, registry_name):
            if PREFIX + name in target:
                continue
            target.register(_builder(registry_name, name))
            names.append(PREFIX + name)
        registered[registry_name] = names
    return registered
