"""Optimizer and learning-rate schedule from a config, with detectron2's semantics.

    optimizer = build_optimizer(cfg, model)          # SGD, per-parameter LR / weight decay
    scheduler = build_lr_scheduler(cfg, optimizer)   # stepped once per iteration

Parameter groups (detectron2's `get_default_optimizer_params`):
- every parameter: lr = BASE_LR, weight decay = WEIGHT_DECAY;
- parameters of normalisation layers (BatchNorm, SyncBN, GroupNorm, LayerNorm, ...):
  weight decay = WEIGHT_DECAY_NORM;
- parameters named `bias` (any module, norm layers included, applied last):
  lr = BASE_LR * BIAS_LR_FACTOR, weight decay = WEIGHT_DECAY_BIAS when it is set.

Gradient clipping (SOLVER.CLIP_GRADIENTS) happens inside `optimizer.step()`, so an
AMP GradScaler unscales the gradients before they are clipped:
- CLIP_TYPE "value": every gradient element clamped to [-CLIP_VALUE, CLIP_VALUE];
- CLIP_TYPE "norm": the gradient of each parameter tensor separately scaled to an
  L-NORM_TYPE norm of at most CLIP_VALUE (detectron2's per-parameter clipping);
- CLIP_TYPE "full_model": the gradients of all parameters together scaled to a norm
  of at most CLIP_VALUE (the DETR / Mask2Former variant).

Schedules (SOLVER.LR_SCHEDULER_NAME), as a multiplier of each group's initial lr
at iteration t (0-based, the iteration the lr is used for):
- warmup for t < WARMUP_ITERS: "linear" from WARMUP_FACTOR * m(0) to m(WARMUP_ITERS),
  "constant" at WARMUP_FACTOR * m(0), where m is the main schedule below;
- "WarmupMultiStepLR": m(t) = GAMMA ** (number of STEPS <= t); STEPS beyond MAX_ITER
  are dropped with a warning;
- "WarmupCosineLR": m(t) = e + (1 - e) * (1 + cos(pi * t / MAX_ITER)) / 2 with
  e = BASE_LR_END / BASE_LR;
- "WarmupStepWithFixedGammaLR": m(t) = GAMMA ** floor((NUM_DECAYS + 1) * t / MAX_ITER).
With SOLVER.RESCALE_INTERVAL the main schedule runs over [WARMUP_ITERS, MAX_ITER]
instead of [0, MAX_ITER] (its progress is (t - WARMUP_ITERS) / (MAX_ITER - WARMUP_ITERS)).
"""
import bisect
import logging
import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set

import torch
from torch import nn

__all__ = ["build_optimizer", "build_lr_scheduler", "get_default_optimizer_params", "NORM_MODULE_TYPES",
           "SGDWithGradientClipping", "build_gradient_clipper", "WarmupLRScheduler", "WarmupMultiStepLR",
           "WarmupCosineLR", "WarmupStepWithFixedGammaLR"]

logger = logging.getLogger(__name__)

# Layers whose affine parameters get WEIGHT_DECAY_NORM (NaiveSyncBatchNorm is a BatchNorm2d).
NORM_MODULE_TYPES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm,
)

# fvcore's schedulers add this to the training progress before turning it into an
# iteration count, so that t / MAX_ITER * MAX_ITER rounding down never loses an iteration.
_WHERE_EPSILON = 1e-6


# ----------------------------------------------------------------------------- parameter groups


def get_default_optimizer_params(model: nn.Module, base_lr: float, weight_decay: float,
                                 weight_decay_norm: Optional[float] = None, bias_lr_factor: float = 1.0,
                                 weight_decay_bias: Optional[float] = None) -> List[Dict[str, Any]]:
    """Parameter groups of `model`'s trainable parameters, see the module docstring.

    Each parameter appears once (shared parameters are not duplicated); parameters
    with equal hyper-parameters are merged into one group, in order of first
    appearance, so the optimizer runs few, large groups.
    """
    groups: Dict[tuple, List[nn.Parameter]] = {}
    seen: Set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr, decay = base_lr, weight_decay
            if isinstance(module, NORM_MODULE_TYPES) and weight_decay_norm is not None:
                decay = weight_decay_norm
            if name == "bias":
                # detectron2 applies the bias override after the norm one, so a norm layer's
                # bias follows WEIGHT_DECAY_BIAS when that is set.
                lr = base_lr * bias_lr_factor
                if weight_decay_bias is not None:
                    decay = weight_decay_bias
            groups.setdefault((lr, decay), []).append(param)
    return [{"params": params, "lr": lr, "weight_decay": decay} for (lr, decay), params in groups.items()]


# ----------------------------------------------------------------------------- gradient clipping

# Clips the gradients of the given parameters in place.
GradientClipper = Callable[[List[nn.Parameter]], None]


def build_gradient_clipper(clip_type: str, clip_value: float, norm_type: float = 2.0) -> GradientClipper:
    """A function clipping the gradients of a list of parameters, see the module docstring.

    "value" and "norm" treat each parameter tensor on its own; "full_model" treats the
    whole list as one vector.
    """
    if clip_type == "value":
        def clip(params: List[nn.Parameter]) -> None:
            # Element-wise, so clipping all tensors at once is the same as one by one.
            torch.nn.utils.clip_grad_value_(params, clip_value)
    elif clip_type == "norm":
        def clip(params: List[nn.Parameter]) -> None:
            for p in params:
                torch.nn.utils.clip_grad_norm_(p, clip_value, norm_type)
    elif clip_type == "full_model":
        def clip(params: List[nn.Parameter]) -> None:
            torch.nn.utils.clip_grad_norm_(params, clip_value, norm_type)
    else:
        raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be 'value', 'norm' or 'full_model', "
                         f"got {clip_type!r}")
    return clip


class SGDWithGradientClipping(torch.optim.SGD):
    """torch.optim.SGD that clips the gradients with `clipper` at the start of every step."""

    def __init__(self, params: Iterable[Any], clipper: GradientClipper, **kwargs: Any):
        super().__init__(params, **kwargs)
        self.clipper = clipper

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        self.clipper(params)
        return super().step(closure)


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum over `model`'s trainable parameters, configured by cfg.SOLVER.

    Returns a plain torch.optim.SGD, or an SGDWithGradientClipping when
    SOLVER.CLIP_GRADIENTS.ENABLED.
    """
    solver = cfg.SOLVER
    params = get_default_optimizer_params(
        model, base_lr=solver.BASE_LR, weight_decay=solver.WEIGHT_DECAY, weight_decay_norm=solver.WEIGHT_DECAY_NORM,
        bias_lr_factor=solver.BIAS_LR_FACTOR, weight_decay_bias=solver.WEIGHT_DECAY_BIAS)
    if not params:
        raise ValueError("The model has no trainable parameters (every parameter has requires_grad=False)")
    kwargs = dict(lr=solver.BASE_LR, momentum=solver.MOMENTUM, nesterov=solver.NESTEROV,
                  weight_decay=solver.WEIGHT_DECAY)
    clip = solver.CLIP_GRADIENTS
    if not clip.ENABLED:
        return torch.optim.SGD(params, **kwargs)
    clipper = build_gradient_clipper(clip.CLIP_TYPE, clip.CLIP_VALUE, clip.NORM_TYPE)
    return SGDWithGradientClipping(params, clipper, **kwargs)


# ----------------------------------------------------------------------------- schedules


class WarmupLRScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Per-iteration schedule: lr(t) = initial lr of the group * multiplier(t).

    Subclasses define the main schedule `main_multiplier(progress)` for progress in
    [0, 1]; this class adds the warmup (see the module docstring). `last_epoch` is
    the iteration; call `step()` once after every optimizer step. The state (for
    checkpoints) is the iteration and the initial lrs, nothing else: the schedule
    itself comes from the config.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, max_iter: int, warmup_factor: float = 0.001,
                 warmup_iters: int = 1000, warmup_method: str = "linear", rescale_interval: bool = False,
                 last_epoch: int = -1):
        if max_iter <= 0:
            raise ValueError(f"SOLVER.MAX_ITER must be positive to build a learning-rate schedule, got {max_iter}")
        if warmup_method not in ("linear", "constant"):
            raise ValueError(f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got {warmup_method!r}")
        self.max_iter = int(max_iter)
        self.warmup_factor = float(warmup_factor)
        self.warmup_iters = min(int(warmup_iters), self.max_iter)
        self.warmup_method = warmup_method
        self.rescale_interval = bool(rescale_interval)
        super().__init__(optimizer, last_epoch)

    def main_multiplier(self, progress: float) -> float:
        """The main schedule's multiplier at `progress` in [0, 1] of its interval."""
        raise NotImplementedError

    def _main_progress(self, iteration: float) -> float:
        """Where `iteration` lies in the main schedule's interval, as a fraction."""
        if not self.rescale_interval:
            return iteration / self.max_iter
        remaining = self.max_iter - self.warmup_iters
        return (iteration - self.warmup_iters) / remaining if remaining > 0 else 1.0

    def multiplier(self, iteration: int) -> float:
        """The lr multiplier used at `iteration` (0-based)."""
        if iteration < self.warmup_iters:
            start = self.warmup_factor * self.main_multiplier(0.0)
            if self.warmup_method == "constant":
                return start
            end = self.main_multiplier(self._main_progress(self.warmup_iters))
            alpha = iteration / self.warmup_iters
            return start + (end - start) * alpha
        return self.main_multiplier(self._main_progress(iteration))

    def get_lr(self) -> List[float]:
        m = self.multiplier(self.last_epoch)
        return [base_lr * m for base_lr in self.base_lrs]

    def _get_closed_form_lr(self) -> List[float]:
        return self.get_lr()

    def state_dict(self) -> Dict[str, Any]:
        # Only what changes during training; plain numbers so torch.load(weights_only=True) reads it.
        return {"base_lrs": list(self.base_lrs), "last_epoch": self.last_epoch,
                "_step_count": self._step_count, "_last_lr": list(self._last_lr)}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.__dict__.update({k: state_dict[k] for k in ("base_lrs", "last_epoch", "_step_count", "_last_lr")
                              if k in state_dict})


class WarmupMultiStepLR(WarmupLRScheduler):
    """Multiplier GAMMA ** (number of `steps` <= t), after warmup."""

    def __init__(self, optimizer: torch.optim.Optimizer, max_iter: int, steps: Sequence[int], gamma: float = 0.1,
                 **warmup: Any):
        if list(steps) != sorted(steps):
            raise ValueError(f"SOLVER.STEPS must be increasing, got {list(steps)}")
        self.steps = [int(s) for s in steps]
        self.gamma = float(gamma)
        super().__init__(optimizer, max_iter, **warmup)

    def main_multiplier(self, progress: float) -> float:
        iteration = int((progress + _WHERE_EPSILON) * self.max_iter)
        return self.gamma ** bisect.bisect_right(self.steps, iteration)


class WarmupCosineLR(WarmupLRScheduler):
    """Half cosine from 1 to `end_multiplier` over the main interval, after warmup."""

    def __init__(self, optimizer: torch.optim.Optimizer, max_iter: int, end_multiplier: float = 0.0, **warmup: Any):
        if not 0.0 <= end_multiplier <= 1.0:
            raise ValueError(f"SOLVER.BASE_LR_END / SOLVER.BASE_LR must be in [0, 1], got {end_multiplier}")
        self.end_multiplier = float(end_multiplier)
        super().__init__(optimizer, max_iter, **warmup)

    def main_multiplier(self, progress: float) -> float:
        e = self.end_multiplier
        return e + 0.5 * (1.0 - e) * (1.0 + math.cos(math.pi * progress))


class WarmupStepWithFixedGammaLR(WarmupLRScheduler):
    """Multiplier GAMMA ** k over NUM_DECAYS + 1 equal intervals k = 0..NUM_DECAYS, after warmup."""

    def __init__(self, optimizer: torch.optim.Optimizer, max_iter: int, gamma: float = 0.1, num_decays: int = 3,
                 **warmup: Any):
        self.gamma = float(gamma)
        self.num_decays = int(num_decays)
        super().__init__(optimizer, max_iter, **warmup)

    def main_multiplier(self, progress: float) -> float:
        k = min(int((progress + _WHERE_EPSILON) * (self.num_decays + 1)), self.num_decays)
        return self.gamma ** k


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> WarmupLRScheduler:
    """The schedule named by SOLVER.LR_SCHEDULER_NAME, see the module docstring."""
    solver = cfg.SOLVER
    warmup = dict(warmup_factor=solver.WARMUP_FACTOR, warmup_iters=solver.WARMUP_ITERS,
                  warmup_method=solver.WARMUP_METHOD, rescale_interval=solver.RESCALE_INTERVAL)
    name = solver.LR_SCHEDULER_NAME
    if name == "WarmupMultiStepLR":
        steps = [s for s in solver.STEPS if s <= solver.MAX_ITER]
        if len(steps) != len(solver.STEPS):
            logger.warning("SOLVER.STEPS %s has values larger than SOLVER.MAX_ITER (%d); they are ignored",
                           list(solver.STEPS), solver.MAX_ITER)
        return WarmupMultiStepLR(optimizer, solver.MAX_ITER, steps, solver.GAMMA, **warmup)
    if name == "WarmupCosineLR":
        if solver.BASE_LR <= 0:
            raise ValueError("WarmupCosineLR needs SOLVER.BASE_LR > 0 (BASE_LR_END is relative to it)")
        return WarmupCosineLR(optimizer, solver.MAX_ITER, solver.BASE_LR_END / solver.BASE_LR, **warmup)
    if name == "WarmupStepWithFixedGammaLR":
        return WarmupStepWithFixedGammaLR(optimizer, solver.MAX_ITER, solver.GAMMA, solver.NUM_DECAYS, **warmup)
    raise ValueError(f"SOLVER.LR_SCHEDULER_NAME must be 'WarmupMultiStepLR', 'WarmupCosineLR' or "
                     f"'WarmupStepWithFixedGammaLR', got {name!r}")
