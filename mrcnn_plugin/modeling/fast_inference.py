"""The fast inference mode: the same detections, computed with less work.

Rewrites of a model that is only run forward, none of which changes
results beyond float rounding:

- fold_batch_norms: a FrozenBN (or eval-mode BatchNorm) after a convolution is
  an affine map per output channel, so it folds into that convolution's weight
  and bias, saving one full pass over every backbone feature map;
- channels-last: oneDNN's convolutions run faster on NHWC tensors, so the
  convolution weights, and with them the backbone's maps, are laid out
  channels-last;
- Winograd 3x3 convolutions: the wide 3x3 convolutions after the ResNet (FPN
  outputs, RPN head, mask and keypoint heads) run NNPACK's Winograd
  F(6x6, 3x3) on CPU (`layers.winograd`), about 5x fewer multiplications, at
  float32 precision (error ~1e-5 of the output's magnitude instead of ~2e-6).
  NNPACK writes NCHW and the maps stay so: the RPN head reads them as they
  are, and the ROI heads convert each pooled level to channels-last once,
  for the box and mask poolers together;
- the box head's first fully connected layer over the flattened pooled ROI
  features (1000 x 12544 x 1024 multiply-adds, a quarter of the ROI heads'
  work) runs as an S x S convolution (`PooledLinear`): the same dot products,
  read straight from the channels-last ROI features (no copy to flatten them)
  by oneDNN, which is faster there than the BLAS matrix product.

All work in place on a module that will no longer be trained or saved as a
checkpoint (its state_dict changes: norms disappear, convolutions gain biases),
so `prepare_for_inference` applies them to a copy.
"""
import copy
import warnings
from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import Conv2d, FrozenBatchNorm2d, WinogradConv2d, WinogradConvStack, winograd_supported
from ..utils import cpu as _cpu
from .backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet

__all__ = ["fold_batch_norms", "prepare_for_inference", "enable_bf16", "Bf16Autocast", "PooledLinear",
           "pooled_linears_as_convs", "winograd_convs"]


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
    """Flatten + Linear over ROI features Tensor[R, C, S, S], computed as one S x S convolution.

    linear(x.flatten(1)) sums weight[o, c*S*S + i*S + j] * x[r, c, i, j]: a
    convolution whose kernel is the weight reshaped to [O, C, S, S], with no
    padding, giving Tensor[R, O, 1, 1]. Same result up to float rounding.
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

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[R, C, S, S] -> Tensor[R, O]."""
        return F.conv2d(x, self.weight, self.bias).flatten(1)


@torch.no_grad()
def pooled_linears_as_convs(module: nn.Module) -> int:
    """Replaces, in place, each box head's `flatten` + `fc1` by an Identity and a PooledLinear.

    Applies to every submodule with a `flatten_shape` (C, S, S) attribute, a
    `flatten` child and an nn.Linear `fc1` child (FastRCNNConvFCHead). Returns
    how many were replaced.
    """
    replaced = 0
    for head in list(module.modules()):
        shape = getattr(head, "flatten_shape", None)
        fc1 = getattr(head, "fc1", None)
        if shape is None or not isinstance(getattr(head, "flatten", None), nn.Flatten) \
                or not isinstance(fc1, nn.Linear):
            continue
        head.flatten = nn.Identity()
        head.fc1 = PooledLinear(fc1, tuple(shape))
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
def winograd_convs(module: nn.Module, min_channels: int = 128) -> int:
    """Replaces, in place, every 3x3 stride-1 convolution with at least min_channels inputs and
    no norm, outside ResNet stages, by a WinogradConv2d (same weights), and runs of them in a
    head's Sequential (mask and keypoint heads: many small ROI maps) by a WinogradConvStack.
    Returns how many convolutions were replaced."""
    replaced = 0

    def visit(parent: nn.Module) -> None:
        nonlocal replaced
        for name, child in list(parent.named_children()):
            if isinstance(child, _DIRECT_CONV_MODULES):
                continue
            if winograd_supported(child) and child.in_channels >= min_channels:
                setattr(parent, name, WinogradConv2d.from_conv(child))
                replaced += 1
            else:
                visit(child)
        if isinstance(parent, nn.Sequential):
            _stack_runs(parent)

    visit(module)
    return replaced


def prepare_for_inference(model: nn.Module, channels_last: Optional[bool] = None, bf16: bool = False,
                          winograd: bool = True) -> nn.Module:
    """A copy of `model` in eval mode with its norms folded and, if asked, channels-last weights
    (and then the box head's first fully connected layer as a convolution, `PooledLinear`) and
    Winograd 3x3 convolutions (`winograd_convs`, used on CPU in float32; not with bf16).

    The copy computes the same outputs as `model.eval()` up to float rounding
    (tests/modeling/test_fast_inference.py); `model` itself is untouched.
    bf16=True also runs the convolution stages in bfloat16 (enable_bf16): faster
    on CPUs with AMX / AVX512-BF16 and on GPUs, not bit-faithful, eager only.
    channels_last=None (default) chooses by the CPU (`utils.cpu.channels_last_pays`): on
    an AVX2-only CPU channels-last weights and PooledLinear were measured slower (R50-FPN
    on AMD EPYC Zen 3, 2 threads: 3.83 s with them against 2.55 s without, both with
    Winograd; PooledLinear alone 1.84 s against the Linear's 0.20 s), on AVX-512 CPUs faster.
    Where bfloat16 is not native (`utils.cpu.bf16_native`) it would be emulated,
    several times slower than float32: bf16=True then warns once and runs float32.
    """
    if bf16 and not _cpu.bf16_native(_model_device(model)):
        _warn_bf16_not_native()
        bf16 = False
    if channels_last is None:
        channels_last = _model_device(model) != "cpu" or _cpu.channels_last_pays()
    fast = copy.deepcopy(model).eval()
    fold_batch_norms(fast)
    for p in fast.parameters():
        p.requires_grad_(False)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    for conv in fast.modules():
        if isinstance(conv, nn.Conv2d) and conv.weight.dim() == 4:
            # oneDNN runs a convolution channels-last when its weight or its input is: the layout
            # of the weights decides the layout of every backbone map.
            conv.weight.data = conv.weight.data.contiguous(memory_format=layout)
    if channels_last:
        # The ROI features are channels-last only then, which is what makes the convolution pay.
        pooled_linears_as_convs(fast)
    if winograd and not bf16:
        # After the channels-last pass: NNPACK takes NCHW weights. The bf16 mode runs these
        # convolutions in bfloat16 instead (measured faster than float32 NNPACK plus the casts).
        winograd_convs(fast)
    if bf16:
        enable_bf16(fast)
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


class Bf16Autocast(nn.Module):
    """Runs `module` under bfloat16 autocast and returns its outputs in float32.

    Only the convolution and matrix-product stages are wrapped (backbone, RPN
    head, box and mask heads): box decoding, NMS, ROIAlign and mask pasting
    stay in float32, where bf16's 8-bit mantissa would move boxes by pixels.
    Eager only: TorchScript does not script autocast regions on CPU.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def __getattr__(self, name: str) -> Any:
        # The heads read attributes of the stages they call (size_divisibility, loss_type, ...).
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("module"), name)

    def forward(self, *args: Any) -> Any:
        device_type = "cuda" if any(p.is_cuda for p in self.module.parameters()) else "cpu"
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            out = self.module(*args)
        return _to_float(out)


_BF16_STAGES = ("backbone", "proposal_generator.rpn_head", "roi_heads.box_head", "roi_heads.mask_head",
                "roi_heads.keypoint_head")


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
    """Wraps model's convolution / matrix-product stages in Bf16Autocast, in place, with their
    convolution and linear weights stored in bfloat16; returns the wrapped stages' names."""
    wrapped: List[str] = []
    for path in _BF16_STAGES:
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        child = getattr(parent, name, None)
        if isinstance(child, nn.Module) and not isinstance(child, Bf16Autocast):
            _matrix_weights_to_bf16(child)
            setattr(parent, name, Bf16Autocast(child))
            wrapped.append(path)
    return wrapped
