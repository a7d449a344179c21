"""The C++ program (export/cpp) builds against the installed torch and OpenCV, runs the
exported Mask R-CNN and Keypoint R-CNN on real COCO photos, and its JSON equals the Python
eager model's detections; bad input gives one-line errors and non-zero exits."""
import json
import subprocess
from pathlib import Path

import pycocotools.mask as mask_util
import pytest
import torch

from golden_utils import GOLDEN_CONFIGS, build_golden_model
from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.data.detection_utils import read_image_tensor
from mrcnn_plugin.export import ExportableDetector, export_model
from mrcnn_plugin.modeling.fast_inference import prepare_for_inference

REPO = Path(__file__).resolve().parents[2]
NUM_IMAGES = 3


@pytest.fixture(scope="module")
def binary(cpp_build):
    """mrcnn_infer, built by scripts/build_cpp.sh (conftest's cpp_build)."""
    return cpp_build / "mrcnn_infer"


@pytest.fixture(scope="module")
def coco_images(shared_dir):
    return sorted((shared_dir / "data" / "coco-mini" / "val2017").glob("*.jpg"))[:NUM_IMAGES]



@pytest.mark.parametrize("name,batch", [("mask_rcnn_R_50_FPN", 1), ("keypoint_rcnn_R_50_FPN", NUM_IMAGES)])
def test_cpp_json_equals_python_eager(name, batch, binary, coco_images, shared_dir, tmp_path):
    """C++ detections equal Python eager ones (the same fast inference mode): boxes within 0.05 px, same classes, scores
    within 1e-4, mask IoU > 0.99, keypoints within 0.05 px; with --batch 3 (the keypoint case) the three photos of
    different sizes go through one forward call and still equal the one-by-one Python results."""
    torch.set_num_threads(2)
    model = build_golden_model(shared_dir, name)
    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / "configs" / GOLDEN_CONFIGS[name]))
    cfg.MODEL.DEVICE = "cpu"
    ts = export_model(cfg, str(tmp_path / "export"), model=model)
    out_json, vis = tmp_path / "out.json", tmp_path / "vis"
    run = subprocess.run([str(binary), "--model", str(ts), "--threads", "2", "--batch", str(batch), "--json", str(out_json),
                          "--vis", str(vis)] + [str(p) for p in coco_images],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "detections" in run.stdout and "ms" in run.stdout
    results = json.loads(out_json.read_text())["images"]
    assert len(results) == NUM_IMAGES and len(list(vis.glob("*.png"))) == NUM_IMAGES

    # The exported file holds the fast inference mode (folded norms): its eager twin is the
    # reference here, so that rounding-level reorderings of near-tied scores cannot differ.
    eager = ExportableDetector(prepare_for_inference(model), cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    compared = 0
    for path, result in zip(coco_images, results):
        with torch.no_grad():
            expected = eager([read_image_tensor(str(path))])[0]
        dets = result["detections"]
        assert len(dets) == expected["boxes"].shape[0]
        if not dets:
            continue
        boxes = torch.tensor([d["box"] for d in dets])
        assert (boxes - expected["boxes"]).abs().max() <= 0.05
        assert [d["class"] for d in dets] == expected["classes"].tolist()
        assert (torch.tensor([d["score"] for d in dets]) - expected["scores"]).abs().max() <= 1e-4
        if "masks" in expected:
            for d, m in zip(dets, expected["masks"].numpy().astype(bool)):
                rle = mask_util.frPyObjects(d["mask_rle"], *d["mask_rle"]["size"])
                ours = mask_util.decode(rle).astype(bool)
                union = (ours | m).sum()
                assert union == 0 or (ours & m).sum() / union > 0.99 or (ours ^ m).sum() <= 4
                assert d["mask_area"] == ours.sum()
        if "keypoints" in expected:
            kps = torch.tensor([d["keypoints"] for d in dets]).view(len(dets), -1, 3)
            assert (kps[..., :2] - expected["keypoints"][..., :2]).abs().max() <= 0.05
        compared += len(dets)
    assert compared > 0, "no detections were compared"


def test_cpp_errors_are_one_line_with_nonzero_exit(binary, coco_images, tiny_model_ts, tmp_path):
    """Missing model, a file that is not a model, an unreadable image and a CUDA request on a
    machine without a GPU: one error line each, a distinct non-zero exit, no crash."""
    text_model = tmp_path / "model.ts"
    text_model.write_text("not a model")
    bad_image = tmp_path / "broken.jpg"
    bad_image.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    cases = [
        (["--model", str(tmp_path / "missing.ts"), str(coco_images[0])], 2, "model file not found"),
        (["--model", str(text_model), str(coco_images[0])], 2, "is not a TorchScript model"),
    ]
    for args, code, message in cases:
        run = subprocess.run([str(binary)] + args, capture_output=True, text=True, timeout=120)
        assert run.returncode == code and message in run.stderr, (args, run.returncode, run.stderr)
        assert run.stderr.strip().count("\n") <= 1
    # The image and device cases need a real model: conftest's tiny one.
    ts = tiny_model_ts
    run = subprocess.run([str(binary), "--model", str(ts), "--batch", "0", str(coco_images[0])], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.startswith("error: --batch needs an integer >= 1, got 0"), run.stderr
    run = subprocess.run([str(binary), "--model", str(ts), str(bad_image)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 3 and "cannot read image" in run.stderr and str(bad_image) in run.stderr
    if not torch.cuda.is_available():
        run = subprocess.run([str(binary), "--model", str(ts), "--device", "cuda", str(coco_images[0])],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 4 and "no CUDA GPU" in run.stderr
    run = subprocess.run([str(binary), "--model", str(ts), str(coco_images[0])], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
