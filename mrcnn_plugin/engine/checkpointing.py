"""Training checkpoints: which checkpointer, what a checkpoint holds besides weights, which file to resume.

A training checkpoint `model_{iteration:07d}.pth` / `model_final.pth` holds
"model", "optimizer", "scheduler" (and "grad_scaler" with CUDA AMP) and:
    iteration          the last finished iteration (0-based)
    seed               the run's seed (the train sampler's order derives from it)
    world_size         processes that trained it
    rng_states         per rank: python, numpy, torch (and CUDA) generator states
    loader_positions   per rank: training records taken from that rank's sampler stream
Everything is tensors, numbers, strings and containers, so the files load with
torch.load(weights_only=True).

`make_checkpointer` is the single place that picks the checkpointer class (the
package's DetectionCheckpointer, atomic saves and `last_checkpoint`); swap it there.
"""
import logging
import os
import random
import re
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

__all__ = ["make_checkpointer", "capture_rng_state", "restore_rng_state", "checkpoint_candidates",
           "load_newest_complete_checkpoint", "CHECKPOINT_PATTERN"]

logger = logging.getLogger(__name__)

# Periodic checkpoints; detectron2's names.
CHECKPOINT_PATTERN = re.compile(r"^model_(\d{7})\.pth$")
FINAL_CHECKPOINT = "model_final.pth"


def make_checkpointer(model: nn.Module, save_dir: str, save_to_disk: bool = True, **checkpointables: Any):
    """The checkpointer of training runs: fvcore's Checkpointer API (save / load / has_checkpoint /
    get_checkpoint_file / tag_last_checkpoint), saving atomically."""
    from ..checkpoint import DetectionCheckpointer

    return DetectionCheckpointer(model, save_dir, save_to_disk=save_to_disk, **checkpointables)


# ----------------------------------------------------------------------------- random generators


def capture_rng_state() -> Dict[str, Any]:
    """This process's generator states (python, numpy, torch CPU, CUDA when initialised), as plain data."""
    version, mt_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: Dict[str, Any] = {
        "python": [version, list(mt_state), gauss],
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Sets the generators to a `capture_rng_state` result."""
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            logger.warning("The checkpoint has CUDA generator states of %d devices, this machine %d: "
                           "CUDA generators not restored", len(cuda_states), torch.cuda.device_count())


# ----------------------------------------------------------------------------- resuming


def _read_last_checkpoint_tag(save_dir: str) -> Optional[str]:
    path = os.path.join(save_dir, "last_checkpoint")
    try:
        with open(path, "r", encoding="utf-8") as f:
            name = f.read().strip()
    except OSError:
        return None
    return name or None


def _iteration_of(file_name: str) -> float:
    """Sort key: the iteration in a periodic checkpoint's name; model_final after all of them."""
    match = CHECKPOINT_PATTERN.match(file_name)
    return float(match.group(1)) if match else float("inf")


def checkpoint_candidates(save_dir: str) -> List[str]:
    """Checkpoint files of `save_dir` to try when resuming, best first.

    The file named in `last_checkpoint` comes first; then model_final.pth and the
    model_NNNNNNN.pth files, newest iteration first. Only existing files are listed.
    """
    if not os.path.isdir(save_dir):
        return []
    names = [n for n in os.listdir(save_dir) if n == FINAL_CHECKPOINT or CHECKPOINT_PATTERN.match(n)]
    names.sort(key=_iteration_of, reverse=True)
    tagged = _read_last_checkpoint_tag(save_dir)
    if tagged is not None and tagged in names:
        names.remove(tagged)
        names.insert(0, tagged)
    return [os.path.join(save_dir, n) for n in names]


def load_newest_complete_checkpoint(checkpointer, save_dir: str) -> Optional[Tuple[str, Dict[str, Any]]]:
    """Loads the best readable training checkpoint of `save_dir` into the checkpointer's objects.

    A file that cannot be read (truncated, empty, partially written) or that is not
    a training checkpoint (no "iteration") is skipped with a warning, and the next
    older one is tried. Returns (path, the file's other entries) or None when no
    file could be used. A file that fails while reading never changes the model:
    reading happens before any state is applied.
    """
    from ..checkpoint import CheckpointError

    for path in checkpoint_candidates(save_dir):
        try:
            extra = checkpointer.load(path)
        except (CheckpointError, EOFError, RuntimeError, OSError) as e:
            logger.warning("Checkpoint %s is incomplete or unreadable, trying the previous one: %s", path, e)
            continue
        if "iteration" not in extra:
            logger.warning("Checkpoint %s has no 'iteration' (weights only, not a training checkpoint); "
                           "trying the previous one", path)
            continue
        return path, extra
    return None
