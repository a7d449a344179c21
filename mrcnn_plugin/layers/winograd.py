"""3x3 convolutions by Winograd's minimal filtering (Lavin & Gray 2016), through NNPACK, on CPU.

A 3x3, stride-1 convolution computed tile by tile with Winograd's F(6x6, 3x3)
transform needs about 5x fewer multiplications than the direct method. PyTorch
ships NNPACK's implementation as the ATen operator
`_nnpack_spatial_convolution`, but only routes convolutions to oneDNN's direct
method. On the wide (256-channel), large feature maps of the FPN outputs, the
RPN head and the mask head this operator is 1.6-2.6x faster than oneDNN on the
CPUs we measured (`mrcnn bench`), at float32 precision: its error is about
1e-5 of the output's magnitude, against 2e-6 for the direct method.

`WinogradConv2d` uses it for inference on CPU in float32 and falls back to the
ordinary convolution everywhere else (GPU, gradients, bfloat16 autocast, an
empty batch, a LibTorch built without NNPACK), and wherever the inference plan
turned it off (`use_winograd`, a plain attribute that the plan sets per stage,
`plan_stage`, in the eager model, the scripted one and from C++; see
`modeling.inference_plan`). Being ATen, it scripts, exports and runs in plain
LibTorch.
"""
import math
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .wrappers import Conv2d

__all__ = ["WinogradConv2d", "WinogradConvStack", "winograd_supported"]


def winograd_supported(conv: nn.Module) -> bool:
    """True for a plain 3x3, stride-1, padding-1 convolution (a Conv2d without a norm left)."""
    return (isinstance(conv, nn.Conv2d) and not isinstance(conv, WinogradConv2d)
            and tuple(conv.kernel_size) == (3, 3) and tuple(conv.stride) == (1, 1)
            and tuple(conv.padding) == (1, 1) and tuple(conv.dilation) == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros" and getattr(conv, "norm", None) is None)


class WinogradConv2d(Conv2d):
    """A 3x3, stride-1, padding-1 Conv2d (+ its activation) computed with NNPACK's Winograd
    transform for float32 inference on CPU, with the ordinary convolution otherwise.

    Built from an existing convolution with `from_conv`; same parameters and
    names (weight, bias), so it computes the same function up to float rounding.
    NNPACK reads and writes NCHW, so its output is NCHW whatever the input's
    memory format: converting it back would cost a full copy of the map, which
    the next consumer may not need (the next convolution of a mask head, the
    RPN head's) or needs for several readers at once (the ROI poolers convert
    the FPN outputs once for the box and mask heads).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Switches of the inference plan: whether NNPACK runs here, and the stage (the path of
        # the head or backbone holding this convolution) the plan names to turn it on.
        self.use_winograd: bool = True
        self.plan_stage: str = ""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, stage: str = "") -> "WinogradConv2d":
        if not winograd_supported(conv):
            raise ValueError(f"WinogradConv2d needs a 3x3 stride-1 padding-1 convolution without norm, got {conv}")
        out = cls(conv.in_channels, conv.out_channels, kernel_size=3, stride=1, padding=1, bias=True,
                  activation=getattr(conv, "activation", None))
        with torch.no_grad():
            out.weight.copy_(conv.weight.detach().contiguous())
            out.bias.copy_(conv.bias.detach() if conv.bias is not None else torch.zeros_like(out.bias))
        out.plan_stage = stage
        out.weight.requires_grad_(conv.weight.requires_grad)
        out.bias.requires_grad_(conv.weight.requires_grad)
        return out.to(conv.weight.device)

    @torch.jit.unused
    def _in_autocast(self) -> bool:
        return torch.is_autocast_enabled("cpu")

    def _use_nnpack(self, x: Tensor) -> bool:
        if not self.use_winograd:
            return False
        if x.device.type != "cpu" or x.dtype != torch.float32 or self.weight.dtype != torch.float32:
            return False
        if x.shape[0] == 0 or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return False
        if not torch.jit.is_scripting() and self._in_autocast():
            return False  # the bf16 mode runs this convolution in bfloat16
        # Whether this build has NNPACK (scripted: decided once, when compiled; see _bias_after_init).
        return torch._nnpack_available()

    def _bias_after_init(self, x: Tensor) -> Tensor:
        """The bias, read after making sure NNPACK is initialised in this process.

        _nnpack_spatial_convolution fails on an uninitialised NNPACK, and the
        only operators that initialise it are _nnpack_available (which
        TorchScript folds into a constant when it compiles, so a loaded model
        never calls it) and ATen's convolution when its dispatcher considers
        NNPACK, which it does for a 3x3 convolution of one tiny single-channel
        image (oneDNN declines those). So: that tiny convolution of zeros, made
        from x so that it is neither folded nor, its exact zero added to the
        bias, dropped as dead code. Microseconds per call.
        """
        probe = x.new_zeros((1, 1, 3, 3), dtype=torch.float32)
        bias = self.bias
        assert bias is not None  # from_conv always gives one
        return bias + F.conv2d(probe, probe).reshape(1)

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[N, C_in, H, W] -> Tensor[N, C_out, H, W]."""
        if self._use_nnpack(x):
            y = torch._nnpack_spatial_convolution(x.contiguous(), self.weight.contiguous(), self._bias_after_init(x),
                                                  [1, 1], [1, 1])
        else:
            y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.activation is not None:
            y = self.activation(y)
        return y


def _to_canvas(x: Tensor, cols: int) -> Tensor:
    """Maps Tensor[R, C, H, W] -> canvas Tensor[1, C, rows * (H + 1), cols * (W + 1)], NCHW.

    Map i sits in grid cell (i // cols, i % cols), at its top-left corner; the
    cell's last row and column, and the cells without a map, are zero.
    """
    r, c, h, w = x.shape
    rows = (r + cols - 1) // cols
    canvas = x.new_zeros((c, rows, h + 1, cols, w + 1))
    full = r // cols
    if full > 0:
        canvas[:, :full, :h, :, :w] = x[: full * cols].reshape(full, cols, c, h, w).permute(2, 0, 3, 1, 4)
    rest = r - full * cols
    if rest > 0:
        canvas[:, full, :h, :rest, :w] = x[full * cols:].permute(1, 2, 0, 3)
    return canvas.view(1, c, rows * (h + 1), cols * (w + 1))


def _from_canvas(canvas: Tensor, r: int, cols: int, h: int, w: int) -> Tensor:
    """The inverse of _to_canvas: canvas Tensor[1, C, rows * (H + 1), cols * (W + 1)] -> Tensor[R, C, H, W]."""
    c = canvas.shape[1]
    rows = (r + cols - 1) // cols
    cells = canvas.view(c, rows, h + 1, cols, w + 1)
    full = r // cols
    parts: List[Tensor] = []
    if full > 0:
        parts.append(cells[:, :full, :h, :, :w].permute(1, 3, 0, 2, 4).reshape(full * cols, c, h, w))
    if r - full * cols > 0:
        parts.append(cells[:, full, :h, : r - full * cols, :w].permute(2, 0, 1, 3))
    return torch.cat(parts) if len(parts) > 1 else parts[0].contiguous()


def _clear_separators(canvas: Tensor, h: int, w: int) -> None:
    """Zeroes, in place, the last row and column of every (H + 1) x (W + 1) cell of canvas
    Tensor[1, C, rows * (H + 1), cols * (W + 1)] (contiguous)."""
    c = canvas.shape[1]
    rows, cols = canvas.shape[2] // (h + 1), canvas.shape[3] // (w + 1)
    cells = canvas.view(c, rows, h + 1, cols, w + 1)
    cells.select(2, h).zero_()
    cells.select(4, w).zero_()


class WinogradConvStack(nn.Module):
    """A run of WinogradConv2d (and ReLU) layers over many small maps (the 14 x 14 ROI
    features of a mask or keypoint head), computed on one canvas that holds the maps side
    by side, each followed by one zero row and one zero column.

    NNPACK's F(6x6, 3x3) computes 6 x 6 output tiles, so a 14 x 14 map alone takes 3 x 3
    tiles (18 x 18 outputs, 65% more than needed); on a canvas the maps share tiles (100
    maps: 150 x 150, 625 tiles instead of 900). The zero row and column between two maps is
    the zero padding each map's convolution reads at its border; it is cleared again after
    each convolution. So each map's result is the one it gets alone, up to float rounding.
    Where NNPACK does not run (`WinogradConv2d`: GPU, gradients, bf16 autocast, no map)
    the layers run one after the other on the maps.
    """

    def __init__(self, layers: List[nn.Module]):
        super().__init__()
        if not layers or not isinstance(layers[0], WinogradConv2d) \
                or not all(isinstance(m, (WinogradConv2d, nn.ReLU)) for m in layers):
            raise ValueError("WinogradConvStack takes WinogradConv2d and ReLU layers, a WinogradConv2d first")
        self.convs = nn.ModuleList([m for m in layers if isinstance(m, WinogradConv2d)])
        # relu_after[i]: a ReLU layer follows convolution i (ReLU of a zero separator stays zero)
        self.relu_after: List[bool] = [k + 1 < len(layers) and isinstance(layers[k + 1], nn.ReLU)
                                       for k, m in enumerate(layers) if isinstance(m, WinogradConv2d)]

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[R, C, H, W] -> Tensor[R, C_out, H, W]."""
        if not self.convs[0]._use_nnpack(x):
            for i, conv in enumerate(self.convs):
                x = conv(x)
                if self.relu_after[i]:
                    x = F.relu(x)
            return x
        r, h, w = x.shape[0], x.shape[2], x.shape[3]
        cols = int(math.ceil(math.sqrt(float(r))))
        y = _to_canvas(x, cols)
        for i, conv in enumerate(self.convs):
            y = conv(y)
            _clear_separators(y, h, w)
            if self.relu_after[i]:
                y = F.relu(y)
        return _from_canvas(y, r, cols, h, w)
