"""Writing the deployable model: `model.ts` (TorchScript) and `model.json` (what a service needs to know)."""
import copy
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Set

import torch
from torch import nn

from ..modeling.fast_inference import prepare_for_inference
from ..modeling.inference_plan import plan_stages, sample_for_sizes
from .inference_module import ExportableDetector

__all__ = ["export_model", "find_foreign_ops", "export_metadata", "load_exported"]

logger = logging.getLogger(__name__)

# Operator namespaces that plain LibTorch provides.
_LIBTORCH_NAMESPACES = {"aten", "prim"}


def _graph_op_kinds(graph, kinds: Set[str]) -> None:
    for node in graph.nodes():
        kinds.add(node.kind())
        for block in node.blocks():
            _graph_op_kinds(block, kinds)


def find_foreign_ops(module: torch.jit.ScriptModule) -> List[str]:
    """Operators in any method or function of a scripted module that plain LibTorch lacks
    (anything outside aten:: and prim::, e.g. torchvision::roi_align)."""
    kinds: Set[str] = set()
    for sub in module.modules():
        for name in sub._c._method_names():
            _graph_op_kinds(sub._c._get_method(name).graph, kinds)
    # Free functions called from the methods appear as prim::CallFunction nodes; their
    # bodies live in the compilation unit, reachable through the serialized code.
    foreign = sorted(k for k in kinds if k.split("::")[0] not in _LIBTORCH_NAMESPACES)
    code_mentions = sorted({line.strip() for sub in module.modules() for line in _all_code(sub).splitlines()
                            if "ops.torchvision" in line})
    return foreign + code_mentions


def _all_code(module: torch.jit.ScriptModule) -> str:
    texts = []
    for name in module._c._method_names():
        try:
            texts.append(getattr(module, name).code)
        except Exception:  # some internal methods have no Python-visible code
            pass
    return "\n".join(texts)


def export_metadata(cfg) -> Dict:
    """What a service needs besides the weights: classes, keypoints, input format, sizes, config."""
    classes: Optional[List[str]] = None
    keypoint_names: Optional[List[str]] = None
    skeleton: Optional[List] = None
    if len(cfg.DATASETS.TEST):
        try:
            from ..data import MetadataCatalog

            meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
            classes = list(meta.get("thing_classes", None) or []) or None
            keypoint_names = list(meta.get("keypoint_names", None) or []) or None
            rules = meta.get("keypoint_connection_rules", None)
            skeleton = [list(r[:2]) for r in rules] if rules else None
        except Exception as e:  # an unregistered name leaves generic names
            logger.warning("No metadata for dataset %s (%s); using generic class names", cfg.DATASETS.TEST[0], e)
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if classes is None or len(classes) != num_classes:
        classes = [f"class_{i}" for i in range(num_classes)]
    outputs = {"boxes": "float32 [N, 4] XYXY, original image pixels", "scores": "float32 [N]",
               "classes": "int64 [N], index into classes"}
    if cfg.MODEL.MASK_ON:
        outputs["masks"] = "uint8 [N, H, W], 1 inside the instance, full original image"
    if cfg.MODEL.KEYPOINT_ON:
        outputs["keypoints"] = "float32 [N, K, 3] (x, y, score), original image pixels"
        if keypoint_names is None or len(keypoint_names) != cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS:
            keypoint_names = [f"keypoint_{i}" for i in range(cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS)]
    return {
        "format_version": 1,
        "input": {"format": cfg.INPUT.FORMAT, "dtype": "uint8", "layout": "CHW, original size, any size",
                  "min_size_test": cfg.INPUT.MIN_SIZE_TEST, "max_size_test": cfg.INPUT.MAX_SIZE_TEST},
        "outputs": outputs,
        "classes": classes,
        "keypoint_names": keypoint_names if cfg.MODEL.KEYPOINT_ON else None,
        "keypoint_skeleton": skeleton if cfg.MODEL.KEYPOINT_ON else None,
        "config": cfg.dump(),
    }


def _load_weights(model: nn.Module, weights: str) -> None:
    from ..checkpoint import DetectionCheckpointer

    DetectionCheckpointer(model).load(weights)


def export_model(cfg, output_dir: str, model: Optional[nn.Module] = None, method: str = "scripting",
                 fast: bool = True, plan: Optional[str] = None) -> Path:
    """Writes output_dir/model.ts and output_dir/model.json; returns the .ts path.

    model: a built model (default: build from cfg and load cfg.MODEL.WEIGHTS).
    method "scripting" compiles everything; "tracing" traces the backbone and
    scripts the rest, which gives the same file behaviour (any size, any device),
    with the backbone's plan switches fixed as they were when traced.
    fast (default) exports prepare_for_inference(model, plan): norms folded, and every
    alternative of the fast mode in the file with the plan's switches set (plan: "auto"
    (default) measures here on an image of the test size, "fixed", "none" (the network as
    built, like fast=False), or a plan file). model.json records the plan, where it was
    measured and what it needs (NNPACK); the C++ library re-measures a plan measured on
    another machine when it loads the file. `model` itself is not changed.
    Raises RuntimeError if the graph needs operators that plain LibTorch lacks.
    """
    if method not in ("scripting", "tracing"):
        raise ValueError(f"--method must be 'scripting' or 'tracing', got {method!r}")
    if model is None:
        from ..modeling import build_model

        model = build_model(cfg)
        if cfg.MODEL.WEIGHTS:
            _load_weights(model, cfg.MODEL.WEIGHTS)
    model = model.eval().to("cpu")
    if not fast:
        plan = "none"
    sample = sample_for_sizes(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    model = prepare_for_inference(model, plan=plan, sample=sample)
    chosen = model.inference_plan
    wrapper = ExportableDetector(model, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        if method == "scripting":
            exported = torch.jit.script(wrapper)
        else:
            exported = _trace(wrapper)
    foreign = find_foreign_ops(exported)
    if foreign:
        raise RuntimeError(f"The exported graph uses operators plain LibTorch lacks: {foreign}")
    meta = export_metadata(cfg)
    meta["export_method"] = method
    meta["inference_plan"] = chosen.to_dict()
    meta["plan_switches"] = {"channels_last": chosen.source != "none",
                             "pooled_conv": bool(chosen.rewrites.get("pooled_linear")),
                             "winograd": plan_stages(model),
                             "frozen_by_trace": ["backbone"] if method == "tracing" else []}
    meta["needs"] = {"nnpack": bool(chosen.winograd)}
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta_json = json.dumps(meta, indent=2)
    ts_path = out / "model.ts"
    tmp = out / ".model.ts.tmp"
    torch.jit.save(exported, str(tmp), _extra_files={"model.json": meta_json})
    os.replace(tmp, ts_path)
    (out / "model.json").write_text(meta_json)
    logger.info("Exported %s (%s) to %s", cfg.MODEL.META_ARCHITECTURE, method, ts_path)
    return ts_path


def _trace(wrapper: ExportableDetector) -> torch.jit.ScriptModule:
    """Traces the backbone and scripts the rest.

    The backbone is a pure convolutional graph, which a trace captures without
    freezing the input size; everything whose control flow depends on the data
    (proposals, detections, masks, resizing) stays scripted. The result behaves
    like the scripted export: any image size, any device.
    """
    model = copy.deepcopy(wrapper.model)
    divisibility = max(int(model.size_divisibility), 32)
    example = torch.zeros(1, len(model.pixel_mean), 2 * divisibility, 3 * divisibility)
    model.backbone = torch.jit.trace(model.backbone, example, strict=False, check_trace=False)
    traced = ExportableDetector(model, wrapper.min_size_test, wrapper.max_size_test).eval()
    return torch.jit.script(traced)


def load_exported(path: str, device: str = "cpu"):
    """(module, metadata dict) from a model.ts written by export_model."""
    extra = {"model.json": ""}
    module = torch.jit.load(path, map_location=device, _extra_files=extra)
    return module, json.loads(extra["model.json"])
