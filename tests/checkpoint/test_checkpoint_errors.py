"""Bad checkpoints are reported clearly and change nothing they should not.

Wrong shapes, missing and unknown keys are named in one table (logged once and
returned as the LoadReport); truncated files, text named .pth and pickles that
would run code are errors naming the file, and the malicious pickle's command
never runs.
"""
import logging
import os
import pickle
import subprocess

import numpy as np
import pytest
import torch

from mrcnn_plugin.checkpoint import CheckpointError, DetectionCheckpointer, save_model_zoo_pkl, save_pth
from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.modeling import build_model

CLS = "roi_heads.box_predictor.cls_score.weight"
MASK_BIAS = "roi_heads.mask_head.predictor.bias"


@pytest.fixture(scope="module")
def small_model():
    """A small Mask R-CNN (R18-FPN, narrow heads), built once."""
    torch.set_num_threads(2)
    cfg = get_cfg()
    cfg.merge_from_file("configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
                         "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
                         "MODEL.ROI_MASK_HEAD.CONV_DIM", 32])
    return build_model(cfg).eval()


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_shape_missing_and_unknown_keys_in_one_table(small_model, tmp_path, caplog):
    """A checkpoint with a wrong-shaped cls_score, no mask predictor bias and an unknown key loads the
    rest; the three problems are named, with shapes, in one logged table and in the returned report, and
    the mis-shaped and missing tensors keep the model's values."""
    before = _state(small_model)
    state = {k: v + 1 for k, v in before.items()}
    state[CLS] = torch.zeros(11, 64)
    del state[MASK_BIAS]
    state["roi_heads.extra_head.weight"] = torch.zeros(3, 4)
    path = tmp_path / "bad.pth"
    save_pth(state, str(path))

    with caplog.at_level(logging.INFO, logger="mrcnn_plugin.checkpoint"):
        report = DetectionCheckpointer(small_model).load(str(path))["load_report"]
    assert report.shape_mismatches == [(CLS, (11, 64), (81, 64))]
    assert report.missing == [(MASK_BIAS, (80,))]
    assert report.unexpected == [("roi_heads.extra_head.weight", (3, 4))]
    assert report.loaded == len(before) - 2

    tables = [r.getMessage() for r in caplog.records if "shape mismatch" in r.getMessage()]
    assert len(tables) == 1, "the problems must be reported in one message"
    for text in (CLS, "(11, 64)", "(81, 64)", MASK_BIAS, "(80,)", "roi_heads.extra_head.weight", "(3, 4)",
                 str(path)):
        assert text in tables[0]
    assert tables[0] == report.table()

    after = small_model.state_dict()
    assert torch.equal(after[CLS], before[CLS]) and torch.equal(after[MASK_BIAS], before[MASK_BIAS])
    key = "backbone.fpn_output2.weight"
    assert torch.equal(after[key], before[key] + 1)
    small_model.load_state_dict(before)


def test_model_zoo_pickle_problems_are_reported_too(small_model, tmp_path):
    """The same report comes from a model-zoo .pkl (numpy arrays, names matched by suffix)."""
    before = _state(small_model)
    state = {k: v.numpy() for k, v in before.items()}
    state["roi_heads.box_predictor.bbox_pred.bias"] = np.zeros(7, dtype=np.float32)
    path = tmp_path / "zoo.pkl"
    save_model_zoo_pkl(state, str(path))
    report = DetectionCheckpointer(small_model).load(str(path))["load_report"]
    assert report.shape_mismatches == [("roi_heads.box_predictor.bbox_pred.bias", (7,), (320,))]
    assert not report.missing and not report.unexpected
    small_model.load_state_dict(before)


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_truncated_file_is_an_error_naming_it(small_model, tmp_path, suffix):
    """A checkpoint cut short (an interrupted copy) is a CheckpointError that names the file; the model
    is untouched."""
    before = _state(small_model)
    path = tmp_path / f"cut{suffix}"
    (save_pth if suffix == ".pth" else save_model_zoo_pkl)(before, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(path)):
        DetectionCheckpointer(small_model).load(str(path))
    assert all(torch.equal(v, before[k]) for k, v in small_model.state_dict().items())


def test_text_file_named_pth_is_an_error_naming_it(small_model, tmp_path):
    """A text file with a .pth name (e.g. an HTML error page saved by a download) is a CheckpointError
    naming the file, not a pickle traceback."""
    path = tmp_path / "model_final.pth"
    path.write_text("<html><body>404 Not Found</body></html>\n")
    with pytest.raises(CheckpointError, match=f"{path}.*not"):
        DetectionCheckpointer(small_model).load(str(path))


def test_empty_and_missing_files(small_model, tmp_path):
    """An empty file is a CheckpointError and a missing one a FileNotFoundError, each naming the path."""
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"{empty}.*empty"):
        DetectionCheckpointer(small_model).load(str(empty))
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        DetectionCheckpointer(small_model).load(str(tmp_path / "nowhere.pth"))


class _RunsCommand:
    """Pickles as a call of `func(*args)`: what a crafted checkpoint uses to run code when loaded."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("attack", ["os.system", "subprocess.call", "builtins.eval"])
def test_malicious_pickle_is_refused_and_never_runs(small_model, tmp_path, attack):
    """A .pkl whose unpickling would run a shell command (os.system, subprocess, eval) is refused with an
    error naming the file and the forbidden global, and the command did not run (the file it would
    create does not exist)."""
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    func, args, forbidden = {
        "os.system": (os.system, (command,), os.system.__module__ + ".system"),
        "subprocess.call": (subprocess.call, (["touch", str(marker)],), "subprocess.call"),
        "builtins.eval": (eval, (f"__import__('os').system({command!r})",), "builtins.eval"),
    }[attack]
    payload = {"model": {"backbone.fpn_output2.bias": np.zeros(32, np.float32)}, "__author__": "attacker",
               "hook": _RunsCommand(func, args)}
    path = tmp_path / "model_final.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError) as error:
        DetectionCheckpointer(small_model).load(str(path))
    assert str(path) in str(error.value) and forbidden in str(error.value)
    assert not marker.exists(), "the pickle's command ran"


def test_malicious_pth_is_refused_and_never_runs(small_model, tmp_path):
    """A .pth carrying the same payload is refused by torch.load(weights_only=True): a CheckpointError
    naming the file, and the command did not run."""
    marker = tmp_path / "pwned"
    path = tmp_path / "model_final.pth"
    torch.save({"model": {}, "hook": _RunsCommand(os.system, (f"touch {marker}",))}, path)
    with pytest.raises(CheckpointError, match=str(path)):
        DetectionCheckpointer(small_model).load(str(path))
    assert not marker.exists(), "the checkpoint's command ran"
