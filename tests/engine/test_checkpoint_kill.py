"""A process killed with SIGKILL in the middle of writing a checkpoint leaves the previous one
usable: it still loads, `last_checkpoint` still names it, and no half-written file carries the
new checkpoint's name (the training checkpointer writes to a temporary file and renames it)."""
import os
import signal
import subprocess
import time

import pytest
import torch
from torch import nn

from engine_tiny import PYTHON, subprocess_env
from mrcnn_plugin.checkpoint import CheckpointError, read_checkpoint
from mrcnn_plugin.engine.checkpointing import checkpoint_candidates, load_newest_complete_checkpoint, make_checkpointer

# The child saves model_0000004 (iteration 4), changes every weight, then saves model_0000009
# through a torch.save whose writes are slowed down (each flushed, then a pause) so that the
# parent can kill it with part of the file on disk. 4 x 1024 x 1024 weights: a 16 MB checkpoint.
CHILD = r"""
import sys, time
import torch
from torch import nn
from mrcnn_plugin.engine.checkpointing import make_checkpointer

torch.manual_seed(0)
model = nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(4)])
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
checkpointer = make_checkpointer(model, sys.argv[1], optimizer=optimizer)
checkpointer.save("model_0000004", iteration=4)
print("saved model_0000004", flush=True)

with torch.no_grad():
    for p in model.parameters():
        p.add_(1.0)

real_save = torch.save


class SlowFile:
    def __init__(self, f):
        self._f = f

    def write(self, data):
        n = self._f.write(data)
        self._f.flush()
        time.sleep(0.5)
        return n

    def __getattr__(self, name):
        return getattr(self._f, name)


torch.save = lambda obj, f, *args, **kwargs: real_save(obj, SlowFile(f), *args, **kwargs)
print("saving model_0000009", flush=True)
checkpointer.save("model_0000009", iteration=9)
print("saved model_0000009", flush=True)
"""


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(4)])


def test_sigkill_during_save_keeps_previous_checkpoint(tmp_path):
    """SIGKILL once the new checkpoint's temporary file has data in it (and before the save ends):
    afterwards there is no model_0000009.pth, only the hidden partial temporary file (which does
    not load); last_checkpoint still says model_0000004.pth, the checkpointer's
    get_checkpoint_file() and resume (load_newest_complete_checkpoint) pick it, the next save
    removes the orphaned temporary file, and the previous checkpoint loads the
    iteration-4 weights exactly."""
    save_dir = tmp_path / "output"
    log_path = tmp_path / "child.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([PYTHON, "-c", CHILD, str(save_dir)], env=subprocess_env(), stdout=log,
                                stderr=subprocess.STDOUT)
        partial = []
        deadline = time.monotonic() + 120
        try:
            while not partial:
                assert proc.poll() is None, f"the child ended before it was killed:\n{log_path.read_text()}"
                assert time.monotonic() < deadline, f"no partial checkpoint in 120 s:\n{log_path.read_text()}"
                if save_dir.is_dir():
                    partial = [p for p in save_dir.glob(".model_0000009.pth.*.tmp") if p.stat().st_size > 0]
                time.sleep(0.01)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    log = log_path.read_text()
    assert "saving model_0000009" in log and "saved model_0000009" not in log

    # What is on disk: the previous checkpoint, its tag, and the orphaned partial temporary file.
    assert not (save_dir / "model_0000009.pth").exists()
    assert sorted(p.name for p in save_dir.iterdir() if not p.name.startswith(".")) == [
        "last_checkpoint", "model_0000004.pth"]
    assert len(partial) == 1 and partial[0].exists()
    complete_size = (save_dir / "model_0000004.pth").stat().st_size
    assert 0 < partial[0].stat().st_size < complete_size
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(str(partial[0]))
    assert (save_dir / "last_checkpoint").read_text() == "model_0000004.pth"

    # The previous checkpoint is what a restart uses, and it is intact.
    model = nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(4)])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    checkpointer = make_checkpointer(model, str(save_dir), optimizer=optimizer)
    assert checkpointer.has_checkpoint()
    assert checkpointer.get_checkpoint_file() == str(save_dir / "model_0000004.pth")
    assert checkpoint_candidates(str(save_dir)) == [str(save_dir / "model_0000004.pth")]
    path, extra = load_newest_complete_checkpoint(checkpointer, str(save_dir))
    assert path == str(save_dir / "model_0000004.pth") and extra["iteration"] == 4
    expected = _model().state_dict()
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)

    # The next save removes the orphaned partial file and completes normally.
    checkpointer.save("model_0000014", iteration=14)
    assert not partial[0].exists()
    assert not list(save_dir.glob(".*.tmp"))
    assert (save_dir / "last_checkpoint").read_text() == "model_0000014.pth"
