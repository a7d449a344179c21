"""Bilinear resizing of uint8 images, bit-exact with PIL's `Image.resize(..., BILINEAR)`.

detectron2 resizes its inputs with PIL. Reproducing PIL's fixed-point arithmetic
in torch lets the exported model resize inside the graph and still feed the
network exactly the pixels the Python pipeline would, so a C++ service and a
Python evaluation see identical inputs. Scriptable, ATen operators only.
"""
from typing import Tuple

import torch
from torch import Tensor

__all__ = ["resize_bilinear_uint8", "pil_bilinear_coefficients"]

def pil_bilinear_coefficients(in_size: int, out_size: int) -> Tuple[Tensor, Tensor]:
    """PIL's bilinear resampling weights along one axis.

    Returns (index Tensor[out_size, K] int64 into the input axis, weight
    Tensor[out_size, K] int64 in units of 2^-22, PIL's fixed point for 8-bit data). When shrinking, the triangle
    filter is widened by the scale factor (antialiasing), as PIL does.
    """
    scale = float(in_size) / float(out_size)
    filterscale = max(scale, 1.0)
    support = filterscale  # the bilinear filter's support is 1
    ksize = int(torch.ceil(torch.tensor(support, dtype=torch.float64))) * 2 + 1
    xx = torch.arange(out_size, dtype=torch.float64)
    center = (xx + 0.5) * scale
    # C's (int) cast truncates toward zero.
    xmin = torch.trunc(center - support + 0.5).clamp(min=0.0)
    xmax = torch.trunc(center + support + 0.5).clamp(max=float(in_size))
    count = xmax - xmin
    taps = torch.arange(ksize, dtype=torch.float64)
    used = taps[None, :] < count[:, None]
    distance = ((taps[None, :] + xmin[:, None] - center[:, None] + 0.5) / filterscale).abs()
    weights = torch.where(used & (distance < 1.0), 1.0 - distance, torch.zeros_like(distance))
    # PIL sums the taps left to right; cumsum keeps that order.
    total = torch.cumsum(weights, dim=1)[:, -1:]
    weights = torch.where(total != 0.0, weights / total, weights)
    scaled = weights * float(1 << 22)  # PIL's fixed point for 8-bit images: 22 fractional bits
    fixed = torch.where(scaled < 0, torch.trunc(scaled - 0.5), torch.trunc(scaled + 0.5)).to(torch.int64)
    index = (xmin[:, None] + taps[None, :]).clamp(max=float(in_size - 1)).to(torch.int64)
    return index, fixed


def _resample_axis(image: Tensor, out_size: int, dim: int) -> Tensor:
    """One PIL pass along `dim` (-1: width, -2: height) of int32 Tensor[C, H, W] holding 0-255."""
    index, weight = pil_bilinear_coefficients(int(image.shape[dim]), out_size)
    index = index.to(image.device)
    weight = weight.to(image.device)
    weight = weight.to(torch.int32)
    if dim == -2:
        weight = weight[:, None, :]  # broadcast over the width
    shape = list(image.shape)
    shape[dim] = out_size
    # 255 * 2^22 plus the rounding half fits in int32.
    acc = torch.full(shape, 1 << 21, dtype=torch.int32, device=image.device)
    for k in range(int(index.shape[1])):
        # When enlarging, the filter's last tap has weight 0 for every output pixel: skip its pass.
        if bool((weight[..., k] == 0).all()):
            continue
        acc = acc + image.index_select(dim, index[:, k]) * weight[..., k]
    return torch.clamp(torch.bitwise_right_shift(acc, 22), 0, 255)


def resize_bilinear_uint8(image: Tensor, new_h: int, new_w: int) -> Tensor:
    """Resizes uint8 Tensor[C, H, W] to uint8 Tensor[C, new_h, new_w] exactly as PIL's BILINEAR.

    Like PIL: the horizontal pass first, rounded to 8 bits, then the vertical pass;
    an axis whose size does not change is not resampled.
    """
    h, w = int(image.shape[-2]), int(image.shape[-1])
    out = image.to(torch.int32)
    if new_w != w:
        out = _resample_axis(out, new_w, -1)
    if new_h != h:
        out = _resample_axis(out, new_h, -2)
    return out.to(torch.uint8).contiguous()
