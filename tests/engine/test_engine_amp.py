"""Mixed precision on CPU: bf16 autocast, no GradScaler."""

import torch

from engine_tiny import tiny_cfg
from mrcnn_plugin.engine import Trainer


class _AutocastProbeTrainer(Trainer):
    """Test-only: records whether each forward ran under CPU autocast, and in which dtype."""

    seen = []

    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        original = model.forward

        def forward(batched_inputs):
            cls.seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
            return original(batched_inputs)

        model.forward = forward
        return model


def test_cpu_amp_uses_bf16_autocast_without_grad_scaler(tmp_path):
    """With SOLVER.AMP.ENABLED on CPU, every training forward runs under bf16 autocast, no GradScaler
    is created (so none is checkpointed), and 3 iterations give finite losses and a final checkpoint."""
    cfg = tiny_cfg("OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "3", "SOLVER.AMP.ENABLED", "True")
    _AutocastProbeTrainer.seen = []
    trainer = _AutocastProbeTrainer(cfg)
    assert trainer.grad_scaler is None
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert _AutocastProbeTrainer.seen == [(True, torch.bfloat16)] * 3
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert "grad_scaler" not in final and final["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in final["model"].values() if v.is_floating_point())
