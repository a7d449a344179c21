"""The inference plan (modeling/inference_plan.py): measured on the machine, cached under its key,
re-measured when it comes from another machine, applied alike to the eager and the scripted model,
and Winograd off wherever NNPACK is not usable. All on the tiny model: a tuning takes under a second."""
import json
import logging

import pytest
import torch
from torch import nn

from mrcnn_plugin.layers import WinogradConv2d
from mrcnn_plugin.modeling import build_model, inference_plan
from mrcnn_plugin.modeling.fast_inference import (PooledLinear, build_switchable, prepare_for_inference,
                                                  register_rewrite_target, REWRITES)
from mrcnn_plugin.modeling.inference_plan import (InferencePlan, PlanError, apply_plan, machine_key, mismatch,
                                                  plan_stages)
from tiny_models import synthetic_image, tiny_cfg

# The tiny model's convolutions are narrower than the 128 inputs Winograd asks for, except with
# 128-wide FPN and heads: this config gives it stages to switch.
_WIDE = ["MODEL.FPN.OUT_CHANNELS", 128, "MODEL.ROI_MASK_HEAD.CONV_DIM", 128]


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_cfg(_WIDE)).eval()


@pytest.fixture()
def plan_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MRCNN_PLAN_CACHE", str(tmp_path / "plans"))
    return tmp_path / "plans"


def _detections(model, seed=1):
    with torch.no_grad():
        return model.inference([{"image": synthetic_image(seed)}])[0]


def test_auto_measures_keeps_the_fastest_and_caches_it(tiny_model, plan_cache, monkeypatch):
    """plan="auto" times the plain plan, the fixed rule and one flip per switch; the plan kept is
    the fastest of those it measured (never slower than plain); it is cached, so a second call
    measures nothing and applies the same switches."""
    fast = prepare_for_inference(tiny_model, plan="auto", sample=synthetic_image(0))
    plan = fast.inference_plan
    assert plan.source == "auto" and "plain" in plan.timings_ms and plan.label() in plan.timings_ms
    assert plan.timings_ms[plan.label()] <= plan.timings_ms["plain"]
    assert len(plan.timings_ms) >= 3 and plan.machine == machine_key("cpu")
    assert set(plan.rewrites["winograd"]) == {"backbone", "proposal_generator.rpn_head", "roi_heads.mask_head"}
    assert len(list(plan_cache.glob("*.json"))) == 1

    def no_tuning(*args, **kwargs):
        raise AssertionError("a cached plan was measured again")

    monkeypatch.setattr(inference_plan, "tune_plan", no_tuning)
    again = prepare_for_inference(tiny_model, plan="auto", sample=synthetic_image(0)).inference_plan
    assert again.source == "cache" and again.switches() == plan.switches()


def test_a_plan_from_another_machine_is_measured_again(tiny_model, plan_cache, tmp_path, caplog):
    """A plan file whose machine key names another CPU (or another thread count) is not applied as
    it is: the warning names what differs and the plan is measured here; one measured here is
    applied as written."""
    here = InferencePlan(channels_last=True, pooled_conv=True, source="auto", machine=machine_key("cpu"))
    elsewhere = InferencePlan(channels_last=True, pooled_conv=True, winograd=["backbone"], source="auto",
                              machine={**machine_key("cpu"), "cpu": "Some Other CPU", "threads": 64})
    for plan, name in ((here, "here.json"), (elsewhere, "elsewhere.json")):
        plan.save(tmp_path / name)
    assert mismatch(here) is None and "Some Other CPU" in mismatch(elsewhere) and "threads" in mismatch(elsewhere)
    applied = prepare_for_inference(tiny_model, plan=str(tmp_path / "here.json")).inference_plan
    assert applied.source == "file" and applied.switches() == here.switches()
    with caplog.at_level(logging.WARNING, logger="mrcnn_plugin.modeling.inference_plan"):
        remeasured = prepare_for_inference(tiny_model, plan=str(tmp_path / "elsewhere.json"),
                                           sample=synthetic_image(0)).inference_plan
    assert "another machine" in caplog.text and "Some Other CPU" in caplog.text
    assert remeasured.source == "auto" and remeasured.machine == machine_key("cpu")


def test_plan_files_round_trip_and_bad_ones_name_the_file(tmp_path):
    """A plan saved and loaded is the same plan; a missing file (FileNotFoundError), a file that is
    not JSON and a JSON with unknown keys (PlanError) each name the file; a plan that is neither
    a choice nor a file is a ValueError listing the choices."""
    plan = InferencePlan(channels_last=True, winograd=["roi_heads.mask_head"], source="auto",
                         machine=machine_key("cpu"), timings_ms={"plain": 3.0})
    plan.save(tmp_path / "p.json")
    assert InferencePlan.load(tmp_path / "p.json") == plan
    with pytest.raises(FileNotFoundError, match="missing.json: no such plan file"):
        InferencePlan.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PlanError, match="bad.json: not a JSON plan"):
        InferencePlan.load(tmp_path / "bad.json")
    (tmp_path / "odd.json").write_text(json.dumps({**plan.to_dict(), "turbo": True}))
    with pytest.raises(PlanError, match=r"odd.json: unknown plan keys \['turbo'\]"):
        InferencePlan.load(tmp_path / "odd.json")
    with pytest.raises(ValueError, match="plan must be one of auto, fixed, none or a plan file"):
        prepare_for_inference(nn.Sequential(nn.Conv2d(1, 1, 1)), plan="fastest")


def test_plan_switches_apply_to_the_scripted_model_as_to_the_eager_one(tiny_model):
    """apply_plan on a scripted switchable model sets the same attributes and weight layouts as on
    the eager one, and under each plan both give the plain plan's detections up to float rounding."""
    fast, _ = build_switchable(tiny_model)
    scripted = torch.jit.script(fast)
    stages = plan_stages(fast)
    assert plan_stages(scripted) == stages and len(stages) == 3
    reference = _detections(fast)
    for plan in (InferencePlan(channels_last=True, pooled_conv=True, winograd=stages),
                 InferencePlan(winograd=["roi_heads.mask_head"]), InferencePlan()):
        for model in (fast, scripted):
            apply_plan(model, plan)
            wino = {m.plan_stage for _, m in model.named_modules() if hasattr(m, "use_winograd") and m.use_winograd}
            assert wino == set(plan.winograd)
            fc1 = model.roi_heads.box_head.fc1
            assert fc1.pooled_as_conv == plan.pooled_conv
            assert fc1.weight.is_contiguous(memory_format=torch.channels_last) == plan.pooled_conv
            got = _detections(model)
            assert torch.equal(got["pred_classes"], reference["pred_classes"])
            torch.testing.assert_close(got["pred_boxes"], reference["pred_boxes"], atol=1e-3, rtol=0)


def test_without_nnpack_no_stage_runs_winograd(tiny_model, monkeypatch):
    """Where NNPACK is not usable (MRCNN_NO_NNPACK=1 stands for a build without it), a plan naming
    Winograd stages applies with every WinogradConv2d on the direct convolution, and the tuner
    offers no Winograd candidates."""
    monkeypatch.setenv("MRCNN_NO_NNPACK", "1")
    fast, _ = build_switchable(tiny_model)
    apply_plan(fast, InferencePlan(winograd=plan_stages(fast)))
    assert not any(m.use_winograd for m in fast.modules() if isinstance(m, WinogradConv2d))
    plan = inference_plan.tune_plan(fast, lambda: _detections(fast), repeats=1)
    assert not plan.winograd and not any("wg(" in label for label in plan.timings_ms)


def test_a_plugin_head_opts_in_to_the_pooled_linear_rewrite():
    """A head of a plugin's own type gets no PooledLinear until it declares the rewrite with
    register_rewrite_target; then its flatten + first Linear are replaced (shape read from a call)."""

    class MyBoxHead(nn.Sequential):
        pass

    class MyModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = MyBoxHead(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))

        def inference(self, batch):
            return self.head(torch.zeros(2, 3, 4, 4))

    model = MyModel()
    _, report = build_switchable(model)
    assert report["pooled_linear"] == []
    try:
        register_rewrite_target("pooled_linear", MyBoxHead)
        fast, report = build_switchable(model)
    finally:
        REWRITES["pooled_linear"].targets.remove(MyBoxHead)
    assert report["pooled_linear"] == ["head.1"] and isinstance(fast.head[1], PooledLinear)
    with pytest.raises(ValueError, match="No rewrite 'fold_norms' takes targets"):
        register_rewrite_target("fold_norms", MyBoxHead)
