"""Inference on degenerate inputs: a 1x1 image, a 10000x8000 photo, and NaN / Inf in the image
or in the backbone's features.

Images go the way `mrcnn demo --config-file` sends them: read_image, then the config
predictor (demo.config_predictor: resize to the test size, model.inference, results at the
original size). The model is a small random Mask R-CNN (ResNet-18 FPN, seeded weights, one
class so that random scores pass the 0.05 threshold), built once for the module; test size
128 (long side at most 224), at most 3 detections per image to bound the full-size masks.
"""
import numpy as np
import pytest
import torch
from PIL import Image

from mrcnn_plugin import demo
from mrcnn_plugin.data import read_image
from mrcnn_plugin.modeling import build_model
from tiny_models import tiny_mask_cfg

MIN_SIZE_TEST, MAX_SIZE_TEST, MAX_DETECTIONS = 128, 224, 3


def _cfg():
    """conftest's tiny exported-model config (128 px, one class), keeping 3 detections."""
    cfg = tiny_mask_cfg()
    cfg.merge_from_list(["TEST.DETECTIONS_PER_IMAGE", MAX_DETECTIONS])
    return cfg


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the two CPU cores are shared with other jobs, and oversubscribed
    OpenMP threads make these small convolutions tens of times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(_cfg()).eval()


@pytest.fixture(scope="module")
def predictor(model):
    """demo.config_predictor(cfg, fast=False), running the module's model (hooks see it) instead of building another."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("mrcnn_plugin.modeling.build_model", lambda cfg: model)
        return demo.config_predictor(_cfg(), fast=False)


class _NetworkInput:
    """Records the (height, width) of the padded batch the backbone gets, while in a `with` block."""

    def __init__(self, model):
        self.model = model
        self.sizes = []

    def __enter__(self):
        self._handle = self.model.backbone.register_forward_pre_hook(
            lambda module, args: self.sizes.append(tuple(args[0].shape[-2:])))
        return self

    def __exit__(self, *exc):
        self._handle.remove()


def _assert_valid_detections(out: dict, height: int, width: int) -> int:
    """Detections of `out` (demo's numpy dict) are finite, inside the image, with masks at its size."""
    n = len(out["scores"])
    assert out["boxes"].shape == (n, 4) and out["classes"].shape == (n,)
    assert out["masks"].shape == (n, height, width) and out["masks"].dtype == bool
    assert np.isfinite(out["boxes"]).all() and np.isfinite(out["scores"]).all()
    assert ((out["scores"] > 0.05) & (out["scores"] <= 1)).all()
    boxes = out["boxes"]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    return n


def test_one_pixel_image(predictor, model, tmp_path):
    """A 1x1 PNG is upscaled to the 128x128 test size for the network, and its detections come
    back at 1x1: boxes clipped into [0, 1] x [0, 1], masks [N, 1, 1], nothing NaN; no error."""
    path = tmp_path / "dot.png"
    Image.fromarray(np.array([[[200, 30, 90]]], np.uint8)).save(path)
    image = read_image(str(path), format=predictor.input_format)
    assert image.shape == (1, 1, 3)
    with _NetworkInput(model) as seen:
        out = predictor.predict(image)
    assert seen.sizes == [(MIN_SIZE_TEST, MIN_SIZE_TEST)]
    n = _assert_valid_detections(out, 1, 1)
    assert 1 <= n <= MAX_DETECTIONS   # random weights, one class: scores around 0.5


def test_10000x8000_photo_resized_for_network_results_at_full_size(predictor, model, tmp_path):
    """A 10000 x 8000 (height x width; 80 megapixels, under PIL's decompression-bomb limit) JPEG:
    the network sees it at 160 x 128 (short side 128), and the detections come back in original
    pixels, with full-size masks [N, 10000, 8000] that are empty outside their boxes."""
    h, w = 10000, 8000
    photo = np.full((h, w, 3), 90, np.uint8)
    photo[2000:6000, 2000:5000] = 230
    path = tmp_path / "huge.jpg"
    Image.fromarray(photo).save(path, quality=80)
    del photo
    image = read_image(str(path), format=predictor.input_format)
    assert image.shape == (h, w, 3)
    with _NetworkInput(model) as seen:
        out = predictor.predict(image)
    del image
    assert seen.sizes == [(160, 128)]   # 10000 * 128 / 8000 = 160
    n = _assert_valid_detections(out, h, w)
    assert 1 <= n <= MAX_DETECTIONS
    assert out["boxes"][:, 2:].max() > 224   # original pixels, not the network's
    for mask, box in zip(out["masks"], out["boxes"]):
        x0, y0 = max(int(np.floor(box[0])) - 1, 0), max(int(np.floor(box[1])) - 1, 0)
        x1, y1 = min(int(np.ceil(box[2])) + 1, w), min(int(np.ceil(box[3])) + 1, h)
        assert mask.sum() == mask[y0:y1, x0:x1].sum()


def _image_tensor() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (3, 64, 96), generator=g).float()


def _assert_no_detections(result: dict, height: int, width: int) -> None:
    assert result["pred_boxes"].shape == (0, 4)
    assert result["scores"].shape == (0,) and result["pred_classes"].shape == (0,)
    assert tuple(result["pred_masks"].shape) == (0, height, width)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_nan_or_inf_in_image_gives_zero_detections(model, value):
    """A float image with a 10x10 patch of NaN / +Inf / -Inf (the convolutions spread it over
    every feature map) gives zero detections, with empty outputs of the right shapes, through
    model.inference and model(...) alike, where the clean image gives some: no error, no NaN box."""
    clean = _image_tensor()
    with torch.no_grad():
        assert len(model.inference([{"image": clean}])[0]["scores"]) > 0
        bad = clean.clone()
        bad[:, 40:50, 60:70] = value
        _assert_no_detections(model.inference([{"image": bad}])[0], 64, 96)
        instances = model([{"image": bad, "height": 480, "width": 640}])[0]["instances"]
    assert len(instances) == 0 and instances.image_size == (480, 640)
    assert tuple(instances.pred_masks.shape) == (0, 480, 640)


def test_nan_features_give_zero_detections(model):
    """A forward hook that makes every backbone feature map NaN: the RPN and box head drop the
    non-finite proposals and boxes, so the image gets zero detections (no error, no NaN boxes)."""
    def all_nan(module, args, features):
        return {name: torch.full_like(f, float("nan")) for name, f in features.items()}

    handle = model.backbone.register_forward_hook(all_nan)
    try:
        with torch.no_grad():
            result = model.inference([{"image": _image_tensor()}])[0]
    finally:
        handle.remove()
    _assert_no_detections(result, 64, 96)


def test_nan_in_half_the_features_keeps_only_detections_from_the_other_half(model):
    """NaN in the bottom half of every feature map (image rows >= 32 of 64): proposals and boxes
    that read a NaN are dropped, so the detections left (where the clean image has all of its
    detections in the bottom half) lie in the top half, finite, with real (non-empty) masks there:
    no NaN passed through as a box, score or mask."""
    image = _image_tensor()
    with torch.no_grad():
        clean = model.inference([{"image": image}])[0]
    assert len(clean["scores"]) > 0 and (clean["pred_boxes"][:, 3] > 32).all()

    def bottom_half_nan(module, args, features):
        out = {}
        for name, f in features.items():
            f = f.clone()
            f[..., f.shape[-2] // 2:, :] = float("nan")
            out[name] = f
        return out

    handle = model.backbone.register_forward_hook(bottom_half_nan)
    try:
        with torch.no_grad():
            result = model.inference([{"image": image}])[0]
    finally:
        handle.remove()
    n = len(result["scores"])
    assert 1 <= n <= MAX_DETECTIONS
    assert torch.isfinite(result["pred_boxes"]).all() and torch.isfinite(result["scores"]).all()
    assert (result["pred_boxes"][:, 3] <= 32).all()
    masks = result["pred_masks"]
    assert masks.dtype == torch.bool and tuple(masks.shape) == (n, 64, 96)
    assert (masks.flatten(1).sum(1) > 0).all() and not masks[:, 32:].any()
