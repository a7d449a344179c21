"""Resuming after a hard kill reproduces the uninterrupted run bitwise on CPU."""
import os
import signal
import subprocess
import time
from pathlib import Path

import torch

from engine_tiny import BASE_CONFIG, PYTHON, TINY_OPTS, subprocess_env

RUNNER = str(Path(__file__).with_name("engine_run_train.py"))


def _train_cmd(output_dir: Path, *extra: str):
    # No aspect-ratio grouping: images waiting in the other orientation's bucket at a checkpoint
    # are not part of it, so with grouping the resumed data order may differ (see trainer.py).
    return [PYTHON, RUNNER, "--config-file", BASE_CONFIG] + TINY_OPTS + [
        "OUTPUT_DIR", str(output_dir), "SOLVER.MAX_ITER", "12", "DATALOADER.ASPECT_RATIO_GROUPING", "False",
        *extra]


def _run(cmd, log_path: Path) -> str:
    with open(log_path, "w") as log:
        subprocess.run(cmd, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT, check=True, timeout=300)
    return log_path.read_text()


def _kill_after(cmd, wait_for: Path, log_path: Path, timeout_s: float = 240) -> None:
    """Starts cmd and SIGKILLs it as soon as `wait_for` exists (checkpoints appear atomically)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        try:
            while not wait_for.exists():
                assert proc.poll() is None, f"training ended before writing {wait_for}:\n{log_path.read_text()}"
                assert time.monotonic() < deadline, f"{wait_for} not written in {timeout_s} s"
                time.sleep(0.02)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def test_resume_after_sigkill_is_bitwise_identical(tmp_path):
    """Run A trains 12 iterations straight. Run B (CHECKPOINT_PERIOD 5) is killed with SIGKILL once
    model_0000004.pth exists; a truncated model_0000009.pth named by last_checkpoint stands for a
    checkpoint cut off mid-write. `--resume` skips it with a warning, continues from
    model_0000004.pth (weights, optimizer, scheduler, RNG states, sampler position) and ends with
    weights and optimizer state bitwise equal to A's."""
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    _run(_train_cmd(run_a), tmp_path / "a.log")

    _kill_after(_train_cmd(run_b, "SOLVER.CHECKPOINT_PERIOD", "5"), run_b / "model_0000004.pth", tmp_path / "b1.log")
    assert not (run_b / "model_final.pth").exists()
    good = (run_b / "model_0000004.pth").read_bytes()
    (run_b / "model_0000009.pth").write_bytes(good[: len(good) // 2])
    (run_b / "last_checkpoint").write_text("model_0000009.pth")

    resume_cmd = _train_cmd(run_b, "SOLVER.CHECKPOINT_PERIOD", "5")
    resume_cmd.insert(resume_cmd.index("--config-file"), "--resume")  # flags go before the KEY VALUE list
    log = _run(resume_cmd, tmp_path / "b2.log")
    assert "model_0000009.pth is incomplete or unreadable" in log
    assert "Resuming from" in log and "model_0000004.pth: next iteration 5" in log

    a = torch.load(run_a / "model_final.pth", weights_only=True)
    b = torch.load(run_b / "model_final.pth", weights_only=True)
    assert a["iteration"] == b["iteration"] == 11
    assert a["model"].keys() == b["model"].keys()
    differing = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:5]}"
    momenta_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    momenta_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert len(momenta_a) == len(momenta_b) > 0
    assert all(torch.equal(x, y) for x, y in zip(momenta_a, momenta_b))
    assert a["loader_positions"] == b["loader_positions"] == [24]
