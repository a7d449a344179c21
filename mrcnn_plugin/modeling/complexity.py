"""Model size and compute: parameter counts and fvcore FLOP counts at a given input size."""
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = ["count_parameters", "count_flops", "FlopCount"]


def count_parameters(model: nn.Module) -> Tuple[int, int]:
    """(all parameters, trainable parameters)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


class _ImageToTensors(nn.Module):
    """Adapts the detector to a traceable signature: one image tensor in, a tuple of tensors out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tuple[Tensor, ...]:
        result = self.model.inference([{"image": image}])[0]
        return tuple(result[k] for k in sorted(result.keys()))


@dataclass
class FlopCount:
    total: int
    by_module: List[Tuple[str, int]]
    num_detections: int


def count_flops(model: nn.Module, height: int, width: int, seed: int = 0,
                modules: Sequence[str] = ("backbone", "proposal_generator", "roi_heads")) -> FlopCount:
    """Multiply-adds counted by fvcore's FlopCountAnalysis for one random image of height x width.

    The weights are whatever the model holds; the count of the ROI heads depends
    on how many detections survive, which is reported. fvcore counts one
    multiply-add as one "flop". by_module lists the submodules named in `modules`
    (paths such as "roi_heads.mask_head"), a module that never ran counting 0.
    """
    from fvcore.nn import FlopCountAnalysis

    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, height, width), generator=g, dtype=torch.uint8).float()
    wrapped = _ImageToTensors(model).eval()
    with torch.no_grad():
        num_detections = int(model.inference([{"image": image}])[0]["scores"].shape[0])
        analysis = FlopCountAnalysis(wrapped, (image,))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        by_module = analysis.by_module()
        total = int(analysis.total())
    top = [(name, int(by_module.get("model." + name, 0)))
           for name in modules]
    return FlopCount(total=total, by_module=top, num_detections=num_detections)
