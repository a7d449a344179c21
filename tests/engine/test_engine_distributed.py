"""Two CPU processes (gloo, DDP) train the same weights as one process with the same batch,
whether started by mrcnn_plugin.engine.launch or by torchrun."""
import json
import subprocess
from pathlib import Path

import torch

from engine_tiny import PYTHON, subprocess_env
from mrcnn_plugin.engine import find_free_port

SCRIPT = str(Path(__file__).with_name("engine_dist_script.py"))


def _run(cmd, out: Path) -> dict:
    result = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return json.loads((out / "run_info.json").read_text())


def _final(out: Path):
    return torch.load(out / "model_final.pth", weights_only=True)


def _last_total_loss(out: Path) -> float:
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    return records[-1]["total_loss"]


def test_two_processes_match_one_process_via_launch_and_torchrun(tmp_path):
    """After 3 steps on a fixed image (IMS_PER_BATCH 2): one process with a 2-image batch, two gloo
    processes spawned by `launch` with 1 image each (DDP), and the same script under
    `torchrun --nproc_per_node 2` end with the same weights (max difference < 1e-5) and losses; the
    weights did change, and each distributed process had a batch of 1."""
    single, spawned, torchrun = tmp_path / "single", tmp_path / "spawned", tmp_path / "torchrun"
    info_single = _run([PYTHON, SCRIPT, "--num-procs", "1", "--out", str(single)], single)
    info_spawned = _run([PYTHON, SCRIPT, "--num-procs", "2", "--out", str(spawned)], spawned)
    info_torchrun = _run([PYTHON, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(find_free_port()),
                          SCRIPT, "--out", str(torchrun)], torchrun)

    assert (info_single["world_size"], info_single["batch_per_process"], info_single["ddp"]) == (1, 2, False)
    for info in (info_spawned, info_torchrun):
        assert (info["world_size"], info["batch_per_process"], info["ddp"]) == (2, 1, True)
    assert info_single["final_parameter_sum"] != info_single["initial_parameter_sum"]

    reference = _final(single)["model"]
    for out in (spawned, torchrun):
        weights = _final(out)["model"]
        assert weights.keys() == reference.keys()
        max_diff = max((weights[k].double() - reference[k].double()).abs().max().item()
                       for k in reference if reference[k].is_floating_point())
        assert max_diff < 1e-5, (out.name, max_diff)
        assert abs(_last_total_loss(out) - _last_total_loss(single)) < 1e-5 * max(1.0, _last_total_loss(single))
