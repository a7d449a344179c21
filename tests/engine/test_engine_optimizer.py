"""Optimizer parameter groups, gradient clipping and learning-rate schedules (detectron2's semantics)."""
import math

import pytest
import torch
from torch import nn

from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.engine import SGDWithGradientClipping, build_lr_scheduler, build_optimizer


def _solver_cfg(**solver):
    cfg = get_cfg()
    for key, value in solver.items():
        setattr(cfg.SOLVER, key, value)
    return cfg


def _lrs(cfg, iterations):
    """The lr in use at each iteration of `iterations` (stepping once per iteration, as the trainer)."""
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    seen = {}
    for t in range(max(iterations) + 1):
        seen[t] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    return {t: seen[t] for t in iterations}


def test_multistep_schedule_with_linear_and_constant_warmup():
    """WarmupMultiStepLR: linear warmup from WARMUP_FACTOR * BASE_LR to BASE_LR over WARMUP_ITERS,
    then x GAMMA at each step; constant warmup stays at WARMUP_FACTOR * BASE_LR. Values at chosen
    iterations equal the hand-computed ones."""
    cfg = _solver_cfg(BASE_LR=0.1, MAX_ITER=100, WARMUP_ITERS=10, WARMUP_FACTOR=0.1, STEPS=(30, 60), GAMMA=0.5)
    expected = {0: 0.01, 5: 0.1 * (0.1 + 0.9 * 0.5), 9: 0.1 * (0.1 + 0.9 * 0.9), 10: 0.1, 29: 0.1,
                30: 0.05, 59: 0.05, 60: 0.025, 99: 0.025}
    got = _lrs(cfg, expected)
    for t, lr in expected.items():
        assert got[t] == pytest.approx(lr, rel=1e-12), t

    cfg.SOLVER.WARMUP_METHOD = "constant"
    got = _lrs(cfg, [0, 9, 10, 30])
    assert got == pytest.approx({0: 0.01, 9: 0.01, 10: 0.1, 30: 0.05}, rel=1e-12)


def test_cosine_schedule_with_warmup():
    """WarmupCosineLR: half cosine from BASE_LR to BASE_LR_END over MAX_ITER; the linear warmup ends
    at the cosine's value at WARMUP_ITERS (detectron2's WarmupParamScheduler)."""
    cfg = _solver_cfg(LR_SCHEDULER_NAME="WarmupCosineLR", BASE_LR=0.1, BASE_LR_END=0.01, MAX_ITER=100,
                      WARMUP_ITERS=10, WARMUP_FACTOR=0.1)

    def cosine(t):
        return 0.01 + 0.5 * (0.1 - 0.01) * (1 + math.cos(math.pi * t / 100))

    expected = {0: 0.01, 5: 0.01 + (cosine(10) - 0.01) * 0.5, 10: cosine(10), 50: 0.055, 75: cosine(75),
                99: cosine(99)}
    got = _lrs(cfg, expected)
    for t, lr in expected.items():
        assert got[t] == pytest.approx(lr, rel=1e-12), t


def test_fixed_gamma_schedule_and_rescaled_interval():
    """WarmupStepWithFixedGammaLR divides MAX_ITER into NUM_DECAYS + 1 equal parts; RESCALE_INTERVAL
    lays those parts over [WARMUP_ITERS, MAX_ITER] instead."""
    cfg = _solver_cfg(LR_SCHEDULER_NAME="WarmupStepWithFixedGammaLR", BASE_LR=1.0, MAX_ITER=100, WARMUP_ITERS=0,
                      GAMMA=0.5, NUM_DECAYS=3)
    assert _lrs(cfg, [0, 24, 25, 50, 99]) == pytest.approx({0: 1.0, 24: 1.0, 25: 0.5, 50: 0.25, 99: 0.125})
    cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR, cfg.SOLVER.RESCALE_INTERVAL = 20, 0.5, True
    # main interval [20, 100): parts of 20 iterations
    assert _lrs(cfg, [0, 10, 20, 39, 40, 99]) == pytest.approx(
        {0: 0.5, 10: 0.75, 20: 1.0, 39: 1.0, 40: 0.5, 99: 0.125})


def test_scheduler_state_dict_resumes_the_schedule():
    """A scheduler rebuilt from the config and given a saved state_dict continues with the same lrs
    (its state is plain numbers, loadable with torch.load(weights_only=True))."""
    cfg = _solver_cfg(BASE_LR=0.1, MAX_ITER=50, WARMUP_ITERS=10, STEPS=(20, 40))
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    for _ in range(15):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    assert all(isinstance(v, (int, float, list)) for v in state.values())
    reference = []
    for _ in range(10):
        reference.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()

    optimizer2 = build_optimizer(cfg, model)
    scheduler2 = build_lr_scheduler(cfg, optimizer2)
    scheduler2.load_state_dict(state)
    for group in optimizer2.param_groups:
        group["lr"] = state["_last_lr"][0]  # what the optimizer's own state_dict restores
    resumed = []
    for _ in range(10):
        resumed.append(optimizer2.param_groups[0]["lr"])
        optimizer2.step()
        scheduler2.step()
    assert resumed == reference


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        for p in self.frozen.parameters():
            p.requires_grad_(False)


def _hyper(optimizer, param):
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]):
            return group["lr"], group["weight_decay"]
    return None


def test_weight_decay_zero_on_norm_params_and_bias_factor():
    """Norm layers' parameters get WEIGHT_DECAY_NORM (0); biases get BASE_LR * BIAS_LR_FACTOR, and
    WEIGHT_DECAY_BIAS when it is set (then also on norm biases, as detectron2); frozen parameters are
    left out; momentum and nesterov come from the config."""
    model = _Toy()
    cfg = _solver_cfg(BASE_LR=0.02, WEIGHT_DECAY=1e-4, WEIGHT_DECAY_NORM=0.0, BIAS_LR_FACTOR=2.0,
                      MOMENTUM=0.8, NESTEROV=True)
    opt = build_optimizer(cfg, model)
    assert type(opt) is torch.optim.SGD
    assert _hyper(opt, model.conv.weight) == (0.02, 1e-4)
    assert _hyper(opt, model.conv.bias) == (0.04, 1e-4)
    assert _hyper(opt, model.fc.weight) == (0.02, 1e-4)
    for norm in (model.bn, model.gn):
        assert _hyper(opt, norm.weight) == (0.02, 0.0)
        assert _hyper(opt, norm.bias) == (0.04, 0.0)
    assert _hyper(opt, model.frozen.weight) is None
    assert all(g["momentum"] == 0.8 and g["nesterov"] for g in opt.param_groups)
    assert sum(len(g["params"]) for g in opt.param_groups) == 8

    cfg.SOLVER.WEIGHT_DECAY_BIAS = 5e-5
    opt = build_optimizer(cfg, model)
    assert _hyper(opt, model.conv.bias) == (0.04, 5e-5)
    assert _hyper(opt, model.bn.bias) == (0.04, 5e-5)
    assert _hyper(opt, model.bn.weight) == (0.02, 0.0)


def _clipped_grads(clip_type, clip_value):
    """Gradients after an optimizer step (lr 0, so only clipping acts on them)."""
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    cfg = _solver_cfg(BASE_LR=0.0, WEIGHT_DECAY=0.0, MOMENTUM=0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = clip_value
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, SGDWithGradientClipping)
    model[0].weight.grad = torch.tensor([[3.0, -4.0], [0.0, 0.5]])   # norm sqrt(25.25)
    model[1].weight.grad = torch.tensor([[6.0, 8.0]])                 # norm 10
    opt.step()
    return model[0].weight.grad, model[1].weight.grad


def test_gradient_clipping_value_norm_and_full_model():
    """CLIP_TYPE value clamps elements; norm scales each parameter's gradient to norm <= CLIP_VALUE
    on its own; full_model scales all gradients together so their joint norm is CLIP_VALUE."""
    g0, g1 = _clipped_grads("value", 1.0)
    assert torch.equal(g0, torch.tensor([[1.0, -1.0], [0.0, 0.5]])) and torch.equal(g1, torch.tensor([[1.0, 1.0]]))

    g0, g1 = _clipped_grads("norm", 1.0)
    assert g0.norm().item() == pytest.approx(1.0, rel=1e-5) and g1.norm().item() == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(g1, torch.tensor([[0.6, 0.8]]), atol=1e-5)

    g0, g1 = _clipped_grads("full_model", 1.0)
    total = math.sqrt(25.25 + 100.0)
    assert torch.cat([g0.flatten(), g1.flatten()]).norm().item() == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(g1, torch.tensor([[6.0, 8.0]]) / total, rtol=1e-4)
