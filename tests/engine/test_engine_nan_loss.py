"""A NaN loss stops training with a clear error and leaves the last good checkpoint usable."""
import itertools

import pytest
import torch

from engine_tiny import tiny_cfg
from mrcnn_plugin.checkpoint import DetectionCheckpointer
from mrcnn_plugin.engine import Trainer
from mrcnn_plugin.modeling import build_model

NAN_AT = 7  # 0-based iteration whose loss_mask becomes NaN


class _NaNAtIterationTrainer(Trainer):
    """Test-only: the model's loss_mask is NaN at iteration NAN_AT (the forward is patched on the
    instance, so parameter names stay the model's)."""

    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        original, calls = model.forward, itertools.count()

        def forward(batched_inputs):
            losses = original(batched_inputs)
            if next(calls) == NAN_AT:
                losses["loss_mask"] = losses["loss_mask"] * float("nan")
            return losses

        model.forward = forward
        return model


def test_nan_loss_stops_training_and_keeps_last_checkpoint(tmp_path):
    """With CHECKPOINT_PERIOD 5, a NaN at iteration 7 raises FloatingPointError naming the iteration
    and every loss term's value; no checkpoint is written for iteration 7 nor a final one;
    last_checkpoint still names model_0000004.pth, which loads into a fresh model with every weight
    matched, and a new trainer resumes from it at iteration 5."""
    cfg = tiny_cfg("OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "20", "SOLVER.CHECKPOINT_PERIOD", "5")
    trainer = _NaNAtIterationTrainer(cfg)
    trainer.resume_or_load(resume=False)
    with pytest.raises(FloatingPointError) as excinfo:
        trainer.train()
    message = str(excinfo.value)
    assert f"iteration {NAN_AT}" in message
    for name in ("loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc", "total_loss"):
        assert f"{name}=" in message
    assert "loss_mask=nan" in message and "model_0000004.pth" in message

    names = sorted(p.name for p in tmp_path.glob("*.pth"))
    assert names == ["model_0000004.pth"]
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_0000004.pth"

    fresh = build_model(cfg)
    extra = DetectionCheckpointer(fresh).load(str(tmp_path / "model_0000004.pth"))
    assert extra["iteration"] == 4 and extra["load_report"].ok
    assert all(torch.isfinite(v).all() for v in fresh.state_dict().values() if v.is_floating_point())

    resumed = Trainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 5
