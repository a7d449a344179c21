"""The exported model: one TorchScript file with ATen operators only, preprocessing and
postprocessing inside, that reproduces the reference detectron2's final outputs from the
original photos and runs in a fresh process without mrcnn_plugin or torchvision."""
import json
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
import torch

from golden_utils import GOLDEN_CONFIGS, GOLDEN_IMAGES, build_golden_model, golden_match_rate, load_golden
from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.export import ExportableDetector, export_model, find_foreign_ops, load_exported
from mrcnn_plugin.modeling.fast_inference import prepare_for_inference

# Short side the golden files were resized to, per photo (shared/golden/README.md).
GOLDEN_SHORT_SIDE = {"astronaut": 800, "chelsea": 512, "coffee": 640}


def _cfg(name: str):
    cfg = get_cfg()
    cfg.merge_from_file(f"configs/{GOLDEN_CONFIGS[name]}")
    cfg.MODEL.DEVICE = "cpu"
    return cfg


@pytest.fixture(scope="module")
def exported(shared_dir, tmp_path_factory):
    """(eager model, path of the scripted export, path of the traced export) for R50-FPN Mask R-CNN."""
    torch.set_num_threads(2)
    model = build_golden_model(shared_dir, "mask_rcnn_R_50_FPN")
    out = tmp_path_factory.mktemp("export")
    scripted = export_model(_cfg("mask_rcnn_R_50_FPN"), str(out / "scripting"), model=model, method="scripting")
    traced = export_model(_cfg("mask_rcnn_R_50_FPN"), str(out / "tracing"), model=model, method="tracing")
    return model, scripted, traced


def _photo_bgr(name: str) -> torch.Tensor:
    rgb = getattr(skimage.data, name)()
    return torch.from_numpy(np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1)))


def test_files_and_metadata(exported):
    """model.ts embeds model.json; the metadata names the input format, classes and outputs."""
    _, path, _ = exported
    module, meta = load_exported(str(path))
    assert json.loads((path.parent / "model.json").read_text()) == meta
    assert meta["input"]["format"] == "BGR" and meta["input"]["min_size_test"] == 800
    assert len(meta["classes"]) == 80 and meta["classes"][0] == "person"
    assert set(meta["outputs"]) == {"boxes", "scores", "classes", "masks"}


@pytest.mark.parametrize("which", [1, 2], ids=["scripting", "tracing"])
def test_graph_has_only_aten_ops(exported, which):
    """No torchvision:: (or other non-LibTorch) operator anywhere in the exported graph."""
    module, _ = load_exported(str(exported[which]))
    assert find_foreign_ops(module) == []
    # Also a plain text check over the serialized code of every submodule.
    for sub in module.modules():
        assert "torchvision" not in sub.code if hasattr(sub, "code") else True


@pytest.mark.parametrize("image", GOLDEN_IMAGES)
def test_reproduces_golden_final_from_original_photos(exported, image, shared_dir):
    """Fed the original photo, the exported model (which resizes inside, PIL-exact) gives the
    reference's final detections: >= 98% matched by shared/golden/match.py."""
    _, path, _ = exported
    module, _ = load_exported(str(path))
    module.min_size_test = GOLDEN_SHORT_SIDE[image]  # the golden files' test size for this photo
    with torch.no_grad():
        out = module([_photo_bgr(image)])[0]
    golden = load_golden(shared_dir, "mask_rcnn_R_50_FPN", image)
    assert tuple(out["masks"].shape[1:]) == tuple(golden["orig_hw"])
    result = {"pred_boxes": out["boxes"], "scores": out["scores"], "pred_classes": out["classes"],
              "pred_masks": out["masks"].bool()}
    assert golden_match_rate(shared_dir, golden["final"], result) >= 0.98


def test_fresh_process_batch_of_three_sizes(exported, tmp_path):
    """A new Python process with only torch loads the file and runs a batch of three images of
    different sizes; results equal the eager model's on the same images (the export's fast mode,
    prepare_for_inference, applied to the eager model too: same network arithmetic)."""
    model, path, _ = exported
    g = torch.Generator().manual_seed(0)
    images = [_photo_bgr("chelsea"), _photo_bgr("coffee")[:, :301, :377].contiguous(),
              torch.randint(0, 256, (3, 200, 150), generator=g, dtype=torch.uint8)]
    torch.save(images, tmp_path / "images.pt")
    code = ("import sys, torch\n"
            "m = torch.jit.load(sys.argv[1])\n"
            "with torch.no_grad():\n"
            "    out = m(torch.load(sys.argv[2]))\n"
            "assert 'torchvision' not in sys.modules and 'mrcnn_plugin' not in sys.modules\n"
            "torch.save(out, sys.argv[3])\n")
    subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "images.pt"), str(tmp_path / "out.pt")],
                   check=True, cwd=tmp_path)
    got = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        expected = ExportableDetector(prepare_for_inference(model), 800, 1333).eval()(images)
    for image, a, b in zip(images, got, expected):
        assert a["masks"].shape[1:] == image.shape[1:]
        _assert_close_detections(a, b)


def test_tracing_matches_scripting_at_another_size(exported):
    """The traced export, traced at one size, gives the scripted export's results at others."""
    _, scripted_path, traced_path = exported
    scripted, _ = load_exported(str(scripted_path))
    traced, _ = load_exported(str(traced_path))
    images = [_photo_bgr("astronaut")[:, :333, :444].contiguous()]
    with torch.no_grad():
        a, b = traced(images)[0], scripted(images)[0]
    # The traced backbone's graph is optimized differently (fused ops): float rounding only.
    _assert_close_detections(a, b)


def _assert_close_detections(a: dict, b: dict) -> None:
    """Same detections up to float rounding between ATen-only and torchvision kernels."""
    assert a["boxes"].shape[0] == b["boxes"].shape[0] and a["boxes"].shape[0] > 0
    assert torch.equal(a["classes"], b["classes"])
    torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-3, rtol=0)
    torch.testing.assert_close(a["scores"], b["scores"], atol=1e-5, rtol=0)
    inter = (a["masks"].bool() & b["masks"].bool()).flatten(1).sum(1).double()
    union = (a["masks"].bool() | b["masks"].bool()).flatten(1).sum(1).double().clamp(min=1)
    assert (inter / union).min() > 0.99


def test_batch_results_do_not_depend_on_the_batch(tiny_model_ts):
    """The exported model's default (pad_batch False) gives each image of a mixed-size batch
    exactly what a call on that image alone gives; pad_batch True (detectron2's padded batch,
    set by a loader with setattr) runs the same batch in one padded tensor."""
    from mrcnn_plugin.export import load_exported

    module, _ = load_exported(str(tiny_model_ts))
    g = torch.Generator().manual_seed(1)
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in [(90, 120), (130, 80)]]
    assert module.pad_batch is False
    with torch.no_grad():
        batch = module(images)
        singles = [module([image])[0] for image in images]
        for got, expected in zip(batch, singles):
            assert expected["scores"].numel() > 0
            for key in expected:
                assert torch.equal(got[key], expected[key]), key
        module.pad_batch = True
        padded = module(images)
    assert [tuple(r["masks"].shape[1:]) for r in padded] == [(90, 120), (130, 80)]
