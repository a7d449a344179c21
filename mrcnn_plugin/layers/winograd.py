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
empty batch, a LibTorch built without NNPACK). Being ATen, it scripts, exports
and runs in plain LibTorch.
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .wrappers import Conv2d

__all__ = ["WinogradConv2d", "winograd_supported"]


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

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "WinogradConv2d":
        if not winograd_supported(conv):
            raise ValueError(f"WinogradConv2d needs a 3x3 stride-1 padding-1 convolution without norm, got {conv}")
        out = cls(conv.in_channels, conv.out_channels, kernel_size=3, stride=1, padding=1, bias=True,
                  activation=getattr(conv, "activation", None))
        with torch.no_grad():
            out.weight.copy_(conv.weight.detach().contiguous())
            out.bias.copy_(conv.bias.detach() if conv.bias is not None else torch.zeros_like(out.bias))
        out.weight.requires_grad_(conv.weight.requires_grad)
        out.bias.requires_grad_(conv.weight.requires_grad)
        return out.to(conv.weight.device)

    @torch.jit.unused
    def _in_autocast(self) -> bool:
        return torch.is_autocast_enabled("cpu")

    def _use_nnpack(self, x: Tensor) -> bool:
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
