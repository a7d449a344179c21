"""Reading and writing each checkpoint format: safe pickles, atomic saves, Detectron ImageNet
backbones, torchvision detection files and the conversion functions behind `mrcnn convert`."""
import _codecs
import collections
import os
import pickle

import numpy as np
import pytest
import torch

from mrcnn_plugin.checkpoint import (CheckpointError, DetectionCheckpointer, UnsafePickleError, convert_checkpoint,
                                     convert_detectron, convert_detectron2, detectron2_to_detectron, load_pickle,
                                     read_checkpoint, save_detectron_pkl, save_pth)
from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.modeling import build_model


def _cfg(config: str, *overrides):
    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *overrides])
    return cfg


@pytest.fixture(scope="module")
def small_model():
    """A small Mask R-CNN (R18-FPN, narrow heads), built once."""
    torch.set_num_threads(2)
    return build_model(_cfg("configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
                            "MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
                            "MODEL.FPN.OUT_CHANNELS", 32,
                            "MODEL.ROI_BOX_HEAD.FC_DIM", 64, "MODEL.ROI_MASK_HEAD.CONV_DIM", 32)).eval()


# ----------------------------------------------------------------------------- safe pickles
class _Reduces:
    """Pickles as the call func(*args)."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_restricted_unpickler_reads_numpy_weights_of_every_protocol(protocol):
    """Arrays of several dtypes, numpy scalars, OrderedDicts and strings, pickled with any protocol
    (2 is what Python 2 era Detectron files use), load with the values pickle itself gives."""
    data = {"model": collections.OrderedDict(w=np.arange(12, dtype=np.float32).reshape(3, 4),
                                             b=np.ones(3, np.float64), i=np.array([1, 2], np.int64)),
            "__author__": "someone", "scale": np.float32(0.5), "nested": [{"a": np.zeros((2, 0))}]}
    loaded = load_pickle(pickle.dumps(data, protocol=protocol), "x.pkl")
    assert loaded["__author__"] == "someone" and loaded["scale"] == np.float32(0.5)
    for key, value in data["model"].items():
        assert loaded["model"][key].dtype == value.dtype
        np.testing.assert_array_equal(loaded["model"][key], value)
    assert loaded["nested"][0]["a"].shape == (2, 0)


def test_restricted_unpickler_refuses_object_arrays_and_other_codecs():
    """Arrays of Python objects, and `_codecs.encode` with a codec other than latin-1, are refused."""
    with pytest.raises(UnsafePickleError, match="objects"):
        load_pickle(pickle.dumps({"x": np.array([{"a": 1}], dtype=object)}, protocol=2), "obj.pkl")
    payload = pickle.dumps(_Reduces(_codecs.encode, ("abc", "rot13")), protocol=2)
    assert pickle.loads(payload) == "nop"  # what an unrestricted unpickler does with it
    with pytest.raises(UnsafePickleError, match="latin-1"):
        load_pickle(payload, "codec.pkl")


# ----------------------------------------------------------------------------- saving
def test_save_is_atomic_and_tags_last_checkpoint(small_model, tmp_path):
    """save() writes save_dir/NAME.pth and last_checkpoint, leaves no temporary file, and the checkpoint
    resumes with its extra data; a save that fails midway leaves the previous file and tag untouched."""
    checkpointer = DetectionCheckpointer(small_model, save_dir=str(tmp_path))
    checkpointer.save("model_0000009", iteration=9)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]
    assert checkpointer.has_checkpoint()
    extra = checkpointer.resume_or_load("", resume=True)
    assert extra["iteration"] == 9 and extra["load_report"].ok

    before = (tmp_path / "model_0000009.pth").read_bytes()
    with pytest.raises(Exception):
        checkpointer.save("model_0000009", iteration=10, hook=lambda: None)  # a lambda cannot be pickled
    assert (tmp_path / "model_0000009.pth").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]


# ----------------------------------------------------------------------------- Detectron ImageNet backbones
def test_msra_imagenet_backbone_initialises_a_c4_model(tmp_path):
    """An MSRA/Detectron ImageNet file (flat blobs, affine-only batch norm `_bn_s`/`_bn_b`, a classifier
    fc1000, momentum blobs, Python 2 pickle) fills the C4 model's ResNet, res5 included (in the ROI
    heads), by suffix; each frozen norm then scales by exactly `_bn_s` and shifts by `_bn_b`; the
    classifier is reported unused and the detection heads missing."""
    model = build_model(_cfg("configs/COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml")).eval()
    resnet = {}
    for key, value in model.state_dict().items():
        for prefix in ("backbone.", "roi_heads."):
            if key.startswith(prefix) and (key[len(prefix):].startswith(("stem.", "res"))):
                resnet[key[len(prefix):]] = value.numpy()
    blobs = {k: v for k, v in detectron2_to_detectron(resnet).items() if not k.endswith(("_bn_rm", "_bn_riv"))}
    rng = np.random.default_rng(0)
    blobs = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in blobs.items()}
    blobs.update(fc1000_w=np.zeros((1000, 2048), np.float32), fc1000_b=np.zeros(1000, np.float32),
                 conv1_w_momentum=np.zeros_like(blobs["conv1_w"]))
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps(blobs, protocol=2))

    report = DetectionCheckpointer(model).load(str(path))["load_report"]
    assert sorted(k for k, _ in report.unexpected) == ["fc1000_b", "fc1000_w"]
    heads = {k for k in model.state_dict() if not k.startswith(("backbone.", "roi_heads.res5."))}
    assert {k for k, _ in report.missing} == heads
    assert report.renamed["res5.2.conv3.weight"] == "roi_heads.res5.2.conv3.weight"

    np.testing.assert_array_equal(model.backbone.stem.conv1.weight.numpy(), blobs["conv1_w"])
    for module, blob in [(model.backbone.stem.conv1.norm, "res_conv1_bn"),
                         (model.backbone.res3[1].conv2.norm, "res3_1_branch2b_bn"),
                         (model.roi_heads.res5[0].shortcut.norm, "res5_0_branch1_bn")]:
        scale, shift = module.scale_and_shift()
        np.testing.assert_array_equal(scale.numpy(), blobs[blob + "_s"])
        np.testing.assert_array_equal(shift.numpy(), blobs[blob + "_b"])


# ----------------------------------------------------------------------------- conversions
def test_conversions_between_formats_keep_every_tensor(small_model, tmp_path):
    """Detectron blobs -> .pth (convert_detectron), .pth -> model-zoo .pkl -> .pth (convert_detectron2)
    keep every tensor, and the results load into the model with nothing to report."""
    state = {k: v.clone() for k, v in small_model.state_dict().items()}
    save_detectron_pkl(state, str(tmp_path / "detectron.pkl"))
    convert_detectron(str(tmp_path / "detectron.pkl"), str(tmp_path / "from_detectron.pth"))
    convert_checkpoint("detectron2", str(tmp_path / "from_detectron.pth"), str(tmp_path / "zoo.pkl"))
    converted = convert_detectron2(str(tmp_path / "zoo.pkl"), str(tmp_path / "back.pth"))
    assert converted.keys() == state.keys() and all(torch.equal(converted[k], state[k]) for k in state)
    for name in ("from_detectron.pth", "zoo.pkl", "back.pth"):
        report = DetectionCheckpointer(small_model).load(str(tmp_path / name))["load_report"]
        assert report.ok, report.table()


def test_conversion_refuses_the_wrong_source(small_model, tmp_path):
    """Each source names what it expects: a detectron2 .pth given as Detectron blobs (or the reverse),
    --kind outside torchvision and an unknown source are errors."""
    save_pth(small_model, str(tmp_path / "d2.pth"))
    save_detectron_pkl(small_model, str(tmp_path / "c2.pkl"))
    with pytest.raises(ValueError, match="not a Detectron"):
        convert_checkpoint("detectron", str(tmp_path / "d2.pth"), str(tmp_path / "x.pth"))
    with pytest.raises(ValueError, match="not a detectron2 checkpoint"):
        convert_checkpoint("detectron2", str(tmp_path / "c2.pkl"), str(tmp_path / "x.pth"))
    with pytest.raises(ValueError, match="--kind"):
        convert_checkpoint("detectron", str(tmp_path / "c2.pkl"), str(tmp_path / "x.pth"), kind="mask_rcnn")
    with pytest.raises(ValueError, match="--kind is required"):
        convert_checkpoint("torchvision", str(tmp_path / "d2.pth"), str(tmp_path / "x.pth"))
    with pytest.raises(ValueError, match="Unknown source"):
        convert_checkpoint("mmdet", str(tmp_path / "d2.pth"), str(tmp_path / "x.pth"))


def test_read_checkpoint_rejects_dicts_without_weights(tmp_path):
    """A .pth or .pkl holding something else than weights is a CheckpointError naming the file."""
    torch.save({"optimizer": {"lr": 0.1}}, tmp_path / "opt.pth")
    with pytest.raises(CheckpointError, match="opt.pth"):
        read_checkpoint(str(tmp_path / "opt.pth"))
    (tmp_path / "cfg.pkl").write_bytes(pickle.dumps({"cfg": "MODEL: {}"}, protocol=2))
    with pytest.raises(CheckpointError, match="cfg.pkl"):
        read_checkpoint(str(tmp_path / "cfg.pkl"))
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CheckpointError, match="list.pkl.*not a dict"):
        read_checkpoint(str(tmp_path / "list.pkl"))
