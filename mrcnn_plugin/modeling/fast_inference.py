"""The fast inference mode: the same detections, computed with less work.

A declared pass over a model that is only run forward (`REWRITES`). Each
rewrite names the module types it applies to, what it produces and when it
is allowed; none changes results beyond float rounding:

- fold_norms (Conv2d): a FrozenBN (or eval-mode BatchNorm) after a convolution
  is an affine map per output channel, so it folds into that convolution's
  weight and bias, saving one full pass over every backbone feature map.
  Always applied: it only removes work.
- pooled_linear (FastRCNNConvFCHead): the box head's first fully connected
  layer over the flattened pooled ROI features (1000 x 12544 x 1024
  multiply-adds, a quarter of the ROI heads' work) can run as an S x S
  convolution (`PooledLinear`): the same dot products, read straight from the
  channels-last ROI features by oneDNN. Switch: `pooled_conv`.
- winograd (FPN, RPN head, box / mask / keypoint heads; not inside a ResNet):
  3x3 stride-1 convolutions with >= 128 inputs can run NNPACK's Winograd
  F(6x6, 3x3) on CPU (`layers.winograd`), about 5x fewer multiplications at
  float32 precision (error ~1e-5 of the output's magnitude instead of ~2e-6).
  Switch: `winograd`, per stage (the path of the backbone or head).
- channels_last (every 4-d weight): oneDNN runs a convolution channels-last
  when its weight is, so the weight layout decides the layout of the maps.
  Switch: `channels_last`.
- bf16 (backbone, RPN head, box / mask / keypoint heads): the convolution and
  matrix stages run in bfloat16, only where that is native. Eager only.

A rewrite puts the faster alternative in place beside the original
computation, and the plan (`inference_plan.InferencePlan`) turns each one on
or off through plain attributes and weight layouts, in the eager model, in the
scripted one and from C++ (`inference_plan.apply_plan`). So one exported model
carries every alternative and the machine that runs it chooses.
`prepare_for_inference` chooses by measurement here (plan="auto"), by the
fixed rule, from a file, or not at all.

A plugin module opts in with `register_rewrite_target(rewrite, ModuleType)`.
Everything works on a copy: the state_dict of the result differs (norms
disappear, convolutions gain biases), so it is for inference, not for saving.
"""
import copy
import logging
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import Conv2d, FrozenBatchNorm2d, WinogradConv2d, WinogradConvStack, winograd_supported
from ..utils import cpu as _cpu
from .backbone.backbone import Backbone
from .backbone.fpn import FPN
from .backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet
from .proposal_generator.rpn import StandardRPNHead
from .roi_heads.box_head import FastRCNNConvFCHead
from .roi_heads.keypoint_head import KRCNNConvDeconvUpsampleHead
from .roi_heads.mask_head import MaskRCNNConvUpsampleHead, MaskRCNNMLPHead

__all__ = ["Rewrite", "REWRITES", "register_rewrite_target", "fold_batch_norms", "prepare_for_inference",
           "build_switchable", "enable_bf16", "Bf16Autocast", "PooledLinear", "pooled_linears_as_convs",
           "winograd_convs"]

logger = logging.getLogger(__name__)


@dataclass
class Rewrite:
    """One rewrite of the fast inference pass: the module types it applies to, what it puts in
    their place, when it is allowed, and the plan switch that turns it on (None: always on)."""
    name: str
    targets: List[Type[nn.Module]]
    produces: str
    allowed: str
    switch: Optional[str] = None


REWRITES: Dict[str, Rewrite] = {r.name: r for r in [
    Rewrite("fold_norms", [Conv2d], "the convolution with the norm folded into its weight and bias",
            "a FrozenBatchNorm2d or an eval-mode BatchNorm2d as the convolution's norm"),
    Rewrite("pooled_linear", [FastRCNNConvFCHead], "PooledLinear in place of flatten + the first Linear",
            "an nn.Flatten child reading 4-d input, followed by an nn.Linear child", switch="pooled_conv"),
    Rewrite("winograd", [FPN, StandardRPNHead, FastRCNNConvFCHead, MaskRCNNConvUpsampleHead,
                         KRCNNConvDeconvUpsampleHead],
            "WinogradConv2d, and a WinogradConvStack for each run of them in a Sequential",
            "3x3 stride-1 padding-1 convolutions without norm, >= 128 inputs, outside ResNet stages; "
            "NNPACK runs them on CPU in float32", switch="winograd"),
    Rewrite("channels_last", [nn.Module], "every 4-d weight laid out channels-last", "any model",
            switch="channels_last"),
    Rewrite("bf16", [Backbone, StandardRPNHead, FastRCNNConvFCHead, MaskRCNNConvUpsampleHead, MaskRCNNMLPHead,
                     KRCNNConvDeconvUpsampleHead],
            "the stage under bfloat16 autocast, its weights in bfloat16, float32 outputs",
            "native bfloat16 (AVX512-BF16, AMX, CUDA); eager only", switch="bf16"),
]}


def register_rewrite_target(rewrite: str, module_type: Type[nn.Module]) -> None:
    """Declares that `module_type` (a plugin's head or backbone) takes the rewrite named `rewrite`
    ("pooled_linear", "winograd" or "bf16") as the built-in modules of its kind do."""
    if rewrite not in ("pooled_linear", "winograd", "bf16"):
        raise ValueError(f"No rewrite {rewrite!r} takes targets; choose from pooled_linear, winograd, bf16")
    if module_type not in REWRITES[rewrite].targets:
        REWRITES[rewrite].targets.append(module_type)


def _targets(model: nn.Module, rewrite: str) -> List[Tuple[str, nn.Module]]:
    """(path, module) of the outermost modules of `model` that `rewrite` applies to."""
    types = tuple(REWRITES[rewrite].targets)
    found: List[Tuple[str, nn.Module]] = []
    for path, m in model.named_modules():
        if isinstance(m, types) and not any(p == "" or path.startswith(p + ".") for p, _ in found):
            found.append((path, m))
    return found


def _norm_scale_shift(norm: nn.Module) -> Tuple[Tensor, Tensor]:
    """(scale, shift), each Tensor[C], with norm(x) = x * scale + shift per channel."""
    if isinstance(norm, FrozenBatchNorm2d):
        return norm.scale_and_shift()
    assert isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats
    weight = norm.weight if norm.affine else torch.ones_like(norm.running_mean)
    bias = norm.bias if norm.affine else torch.zeros_like(norm.running_mean)
    scale = weight * (norm.running_var + norm.eps).rsqrt()
    return scale, bias - norm.running_mean * scale


def _foldable(conv: nn.Module) -> bool:
    norm = getattr(conv, "norm", None)
    if not isinstance(conv, Conv2d) or norm is None:
        return False
    if isinstance(norm, FrozenBatchNorm2d):
        return True
    # A BatchNorm that still trains normalises by batch statistics, which no fixed weight reproduces.
    return isinstance(norm, nn.BatchNorm2d) and not norm.training and norm.track_running_stats


@torch.no_grad()
def fold_batch_norms(module: nn.Module) -> int:
    """Folds every Conv2d's FrozenBN / eval-mode BatchNorm into the convolution, in place.

    conv(x) * scale + shift = conv'(x) with weight' = weight * scale (per output
    channel) and bias' = bias * scale + shift. Returns how many were folded.
    """
    folded = 0
    for conv in module.modules():
        if not _foldable(conv):
            continue
        scale, shift = _norm_scale_shift(conv.norm)
        weight = conv.weight * scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype)
        bias = shift if conv.bias is None else conv.bias * scale + shift
        conv.weight = nn.Parameter(weight, requires_grad=False)
        conv.bias = nn.Parameter(bias.to(weight.dtype), requires_grad=False)
        conv.norm = None
        folded += 1
    return folded




class PooledLinear(nn.Module):
    """Flatten + Linear over ROI features Tensor[R, C, S, S], computed either as the matrix
    product or as one S x S convolution (`pooled_as_conv`, a switch of the inference plan).

    linear(x.flatten(1)) sums weight[o, c*S*S + i*S + j] * x[r, c, i, j]: a
    convolution whose kernel is the weight reshaped to [O, C, S, S], with no
    padding, giving Tensor[R, O, 1, 1]. Same result up to float rounding. The
    weight is kept [O, C, S, S]: the plan lays it out channels-last for the
    convolution and contiguous for the product, where flatten(1) is a view.
    """

    def __init__(self, linear: nn.Linear, shape: Tuple[int, int, int]):
        super().__init__()
        c, h, w = shape
        if linear.in_features != c * h * w:
            raise ValueError(f"Linear with {linear.in_features} inputs cannot read features of shape {shape}")
        weight = linear.weight.detach().reshape(linear.out_features, c, h, w)
        self.weight = nn.Parameter(weight.contiguous(memory_format=torch.channels_last), requires_grad=False)
        bias = linear.bias.detach() if linear.bias is not None else weight.new_zeros(linear.out_features)
        self.bias = nn.Parameter(bias.clone(), requires_grad=False)
        self.pooled_as_conv: bool = True

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[R, C, S, S] -> Tensor[R, O]."""
        if self.pooled_as_conv:
            return F.conv2d(x, self.weight, self.bias).flatten(1)
        return F.linear(x.flatten(1), self.weight.flatten(1), self.bias)


@torch.no_grad()
def pooled_linears_as_convs(module: nn.Module, run: Callable[[], Any]) -> int:
    """Replaces, in place, in each pooled_linear target of `module` (FastRCNNConvFCHead), an
    nn.Flatten child followed by an nn.Linear child by an Identity and a PooledLinear.

    run() calls the module once, on any input: the shape (C, S, S) that the Flatten sees is
    read then, so the head declares nothing. Returns how many were replaced.
    """
    found: List[Tuple[nn.Module, str, str]] = []
    for _, head in _targets(module, "pooled_linear"):
        names = [name for name, _ in head.named_children()]
        for first, second in zip(names, names[1:]):
            if isinstance(getattr(head, first), nn.Flatten) and isinstance(getattr(head, second), nn.Linear):
                found.append((head, first, second))
    if not found:
        return 0
    shapes: Dict[int, Tuple[int, ...]] = {}

    def record(m: nn.Module, args: Tuple[Tensor, ...]) -> None:
        shapes.setdefault(id(m), tuple(args[0].shape[1:]))

    hooks = [getattr(head, flat).register_forward_pre_hook(record) for head, flat, _ in found]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    replaced = 0
    for head, flat, fc in found:
        shape = shapes.get(id(getattr(head, flat)))
        if shape is None or len(shape) != 3:
            continue  # not reached, or its input is not 4-d: left as it is
        setattr(head, fc, PooledLinear(getattr(head, fc), (shape[0], shape[1], shape[2])))
        setattr(head, flat, nn.Identity())
        replaced += 1
    return replaced


# Inside a ResNet the 3x3 convolutions are narrower or read small maps, where NNPACK gains little
# and the NCHW <-> channels-last copies around it would eat that.
_DIRECT_CONV_MODULES = (ResNet, BasicStem, BasicBlock, BottleneckBlock)


def _stack_runs(parent: nn.Sequential) -> None:
    """Replaces, in place, each run of two or more WinogradConv2d in `parent` (with the ReLU
    layers between them) by one WinogradConvStack in the run's first slot and Identity in the
    others, so that the Sequential's forward and its layer names stay as they were."""
    names = [name for name, _ in parent.named_children()]
    layers = [getattr(parent, name) for name in names]
    start = 0
    while start < len(layers):
        if not isinstance(layers[start], WinogradConv2d):
            start += 1
            continue
        end = start + 1
        while end < len(layers) and isinstance(layers[end], (WinogradConv2d, nn.ReLU)):
            end += 1
        run = layers[start:end]
        if sum(isinstance(m, WinogradConv2d) for m in run) >= 2:
            setattr(parent, names[start], WinogradConvStack(run))
            for name in names[start + 1:end]:
                setattr(parent, name, nn.Identity())
        start = end


@torch.no_grad()
def winograd_convs(module: nn.Module, min_channels: int = 128) -> Dict[str, int]:
    """Replaces, in place, in each winograd target of `module` (FPN, RPN head, box / mask /
    keypoint heads), every 3x3 stride-1 convolution with at least min_channels inputs and no
    norm, outside ResNet stages, by a WinogradConv2d (same weights) whose `plan_stage` is the
    target's path, and runs of them in a head's Sequential by a WinogradConvStack.
    Returns {stage path: convolutions replaced} for the stages with any."""
    replaced: Dict[str, int] = {}

    def visit(parent: nn.Module, stage: str) -> None:
        for name, child in list(parent.named_children()):
            if isinstance(child, _DIRECT_CONV_MODULES):
                continue
            if winograd_supported(child) and child.in_channels >= min_channels:
                setattr(parent, name, WinogradConv2d.from_conv(child, stage))
                replaced[stage] = replaced.get(stage, 0) + 1
            else:
                visit(child, stage)
        if isinstance(parent, nn.Sequential):
            _stack_runs(parent)

    for path, target in _targets(module, "winograd"):
        if winograd_supported(target) and target.in_channels >= min_channels:
            continue  # a bare convolution as the target: nothing to hold the replacement
        visit(target, path)
    return replaced


def _inside_resnet(model: nn.Module, path: str) -> bool:
    parts = path.split(".")
    return any(isinstance(model.get_submodule(".".join(parts[:k])), _DIRECT_CONV_MODULES)
               for k in range(1, len(parts)))


@torch.no_grad()
def build_switchable(model: nn.Module, bf16: bool = False,
                     sample: Optional[Tensor] = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """A copy of `model` in eval mode with every rewrite in place and every switch off (a plan
    turns them on: `inference_plan.apply_plan`), and a report of what was rewritten.

    sample: Tensor[3, H, W] uint8, an image the copy runs once to read the box head's input
    shape (default: a small blank image). The report: {"fold_norms": n, "pooled_linear":
    [paths], "winograd": {stage: n}, "bf16": [paths], "left": [why each 3x3 outside a
    ResNet stays direct]}.
    """
    fast = copy.deepcopy(model).eval()
    report: Dict[str, Any] = {"fold_norms": fold_batch_norms(fast)}
    for p in fast.parameters():
        p.requires_grad_(False)
    if sample is None:
        side = 2 * max(int(getattr(fast, "size_divisibility", 32) or 32), 32)
        sample = torch.zeros(3, side, side, dtype=torch.uint8)
    image = sample.to(_model_device(fast))
    batch = [{"image": image, "height": image.shape[-2], "width": image.shape[-1]}]
    pooled_linears_as_convs(fast, lambda: fast.inference(batch))
    report["pooled_linear"] = [path for path, m in fast.named_modules() if isinstance(m, PooledLinear)]
    report["winograd"] = winograd_convs(fast)
    for m in fast.modules():
        if isinstance(m, PooledLinear):
            m.pooled_as_conv = False
        if isinstance(m, WinogradConv2d):
            m.use_winograd = False
    report["left"] = [f"{path}: 3x3 convolution with a norm or under 128 inputs, runs direct"
                      for path, m in fast.named_modules()
                      if isinstance(m, nn.Conv2d) and not isinstance(m, WinogradConv2d)
                      and tuple(m.kernel_size) == (3, 3) and not _inside_resnet(fast, path)]
    report["bf16"] = enable_bf16(fast) if bf16 else []
    return fast, report


def prepare_for_inference(model: nn.Module, plan: Union[None, str, Any] = None, *,
                          channels_last: Optional[bool] = None, bf16: bool = False, winograd: bool = True,
                          sample: Optional[Tensor] = None) -> nn.Module:
    """A copy of `model` for inference with the rewrites of `REWRITES` in place, switched by an
    inference plan; `model` itself is untouched. The copy computes the same outputs as
    `model.eval()` up to float rounding (tests/modeling/test_fast_inference.py).

    plan: "auto" (the default, unless the environment's MRCNN_INFERENCE_PLAN names another)
    times candidate plans on `sample` here and keeps the fastest, the plain model (every
    switch off) among them, and caches it on disk under this machine's key, so a second
    call costs nothing; "fixed" is the rule drawn from the CPUs measured so far
    (`utils.cpu.channels_last_pays`, Winograd everywhere); "none" the plain eval copy with
    nothing rewritten; a path to a plan JSON or an InferencePlan is applied if it was
    measured on this machine (same CPU, ISA, threads, torch) and re-measured otherwise.
    channels_last or winograd=False given: the fixed plan with those choices.
    bf16=True runs the convolution stages in bfloat16 where that is native
    (`utils.cpu.bf16_native`); elsewhere it warns once and runs float32.
    sample: Tensor[3, H, W] uint8, the image timed (default: synthetic, 800 x 1067).
    The result's `inference_plan` is the plan applied, its `rewrites` what was rewritten.
    """
    from . import inference_plan as _plan

    if bf16 and not _cpu.bf16_native(_model_device(model)):
        _warn_bf16_not_native()
        bf16 = False
    spec = _plan.default_plan_spec() if plan is None else plan
    if channels_last is not None or not winograd:
        spec = "fixed"
    if spec == "none":
        fast = copy.deepcopy(model).eval()
        for p in fast.parameters():
            p.requires_grad_(False)
        fast.inference_plan = _plan.InferencePlan(source="none")
        return fast
    fast, report = build_switchable(model, bf16=bf16)
    chosen = _plan.resolve_plan(fast, spec, sample=sample)
    if channels_last is not None:
        chosen.channels_last = chosen.pooled_conv = channels_last
    if not winograd:
        chosen.winograd = []
    chosen.bf16 = bf16
    _plan.apply_plan(fast, chosen)
    chosen.rewrites = report
    fast.inference_plan = chosen
    logger.info("Fast inference: %s", _plan.describe(chosen))
    return fast


def _model_device(model: nn.Module) -> str:
    param = next(model.parameters(), None)
    return "cpu" if param is None else param.device.type


_warned_bf16 = False


def _warn_bf16_not_native() -> None:
    """One warning per process: bf16 was asked for on a CPU that would only emulate it."""
    global _warned_bf16
    if not _warned_bf16:
        _warned_bf16 = True
        warnings.warn(f"bf16 requested, but {_cpu.cpu_name()} has no native bfloat16 (AVX512-BF16 or AMX): "
                      "running float32 instead", RuntimeWarning, stacklevel=3)


def _to_float(value: Any) -> Any:
    """value with every floating tensor in it (nested in lists, tuples, dicts) cast to float32."""
    if isinstance(value, Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_float(v) for k, v in value.items()}
    return value



class Bf16Autocast:
    """Mixin of a stage that runs under bfloat16 autocast and returns its outputs in float32.

    `enable_bf16` gives each wrapped stage a class derived from this and from the stage's own
    class, so the stage stays an instance of what it was (its type, its attributes) while its
    forward runs in bfloat16. Only the convolution and matrix-product stages are wrapped
    (backbone, RPN head, box / mask / keypoint heads): box decoding, NMS, ROIAlign and mask
    pasting stay in float32, where bf16's 8-bit mantissa would move boxes by pixels.
    Eager only: TorchScript does not script autocast regions on CPU.
    """

    def forward(self, *args: Any) -> Any:
        device_type = "cuda" if any(p.is_cuda for p in self.parameters()) else "cpu"  # type: ignore[attr-defined]
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            out = super().forward(*args)  # type: ignore[misc]
        return _to_float(out)


_BF16_CLASSES: Dict[type, type] = {}


def _bf16_class(cls: type) -> type:
    """The class Bf16<cls>: Bf16Autocast's forward around cls's (one per cls)."""
    if cls not in _BF16_CLASSES:
        _BF16_CLASSES[cls] = type(f"Bf16{cls.__name__}", (Bf16Autocast, cls), {})
    return _BF16_CLASSES[cls]


@torch.no_grad()
def _matrix_weights_to_bf16(module: nn.Module) -> None:
    """Stores the weights and biases of module's convolutions and linear layers in bfloat16, in place.

    Autocast casts a float32 weight to bfloat16 on every call (it caches casts
    only of weights that require gradients, and only within one autocast
    region): 44 M parameters of R50-FPN, re-read and re-written per image.
    Stored in bfloat16, the cast is a no-op; the arithmetic is the same.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, PooledLinear)):
            m.weight.data = m.weight.data.to(torch.bfloat16)
            if m.bias is not None:
                m.bias.data = m.bias.data.to(torch.bfloat16)



def enable_bf16(model: nn.Module) -> List[str]:
    """Runs each bf16 target of `model` (backbone, RPN head, box / mask / keypoint heads) under
    bfloat16 autocast (`Bf16Autocast`), in place, with its convolution and linear weights stored
    in bfloat16; returns the paths of the stages changed (none the second time)."""
    wrapped: List[str] = []
    for path, stage in _targets(model, "bf16"):
        if not isinstance(stage, Bf16Autocast):
            _matrix_weights_to_bf16(stage)
            stage.__class__ = _bf16_class(type(stage))
            wrapped.append(path)
    return wrapped
