"""The three reference architectures compile with torch.jit.script as written, keep their
parameter names, compute what the eager model computes, and survive save/load in a new process."""
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from detection_compare import assert_same_detections
from golden_utils import GOLDEN_CONFIGS, build_golden_model, load_golden

MODELS = list(GOLDEN_CONFIGS)


@pytest.fixture(scope="module", params=MODELS)
def models(request, shared_dir):
    """(eager, scripted, name) for one architecture with the golden weights."""
    torch.set_num_threads(2)
    eager = build_golden_model(shared_dir, request.param)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's deprecation notice
        scripted = torch.jit.script(eager)
    return eager, scripted, request.param


def _coco_image(shared_dir, short_side: int) -> dict:
    """A real COCO photo from coco-mini as model input: BGR uint8 CHW, resized to short_side."""
    path = sorted((shared_dir / "data" / "coco-mini" / "val2017").glob("*.jpg"))[0]
    img = Image.open(path).convert("RGB")
    w, h = img.size
    scale = short_side / min(h, w)
    resized = img.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    bgr = np.ascontiguousarray(np.asarray(resized)[:, :, ::-1].transpose(2, 0, 1))
    return {"image": torch.from_numpy(bgr), "height": torch.tensor(h), "width": torch.tensor(w)}


def _inputs(shared_dir, name):
    """A golden photo, plus a COCO photo for the FPN models (the C4 model, ten times
    slower per image, is checked on the golden photo only to keep the suite short)."""
    golden = load_golden(shared_dir, name, "chelsea")
    h, w = golden["orig_hw"]
    inputs = [{"image": golden["image_bgr_chw_uint8"], "height": torch.tensor(h), "width": torch.tensor(w)}]
    if "C4" not in name:
        inputs.append(_coco_image(shared_dir, 480))
    return inputs


def test_state_dict_keys_equal_eager_and_reference(models, shared_dir):
    """Scripting renames nothing: scripted keys and shapes == eager == detectron2's."""
    eager, scripted, name = models
    reference = json.loads((shared_dir / "golden" / "reference_state_dict_keys.json").read_text())[name]
    assert list(scripted.state_dict().keys()) == list(eager.state_dict().keys())
    assert {k: list(v.shape) for k, v in scripted.state_dict().items()} == reference


def test_scripted_equals_eager_on_real_images(models, shared_dir, tmp_path):
    """Scripted outputs equal eager ones on a golden photo and a COCO photo (scores 1e-5,
    coordinates 1e-4 px, same classes and masks), and a fresh Python process that loads
    the saved file with neither mrcnn_plugin nor torchvision reproduces them."""
    eager, scripted, name = models
    inputs = _inputs(shared_dir, name)
    with torch.no_grad():
        expected = eager.inference(inputs)
        got = scripted(inputs)
    for a, b in zip(got, expected):
        assert_same_detections(a, b)

    model_path, inputs_path, out_path = tmp_path / "model.ts", tmp_path / "inputs.pt", tmp_path / "out.pt"
    scripted.save(str(model_path))
    torch.save(inputs, inputs_path)
    # Scripted, ROIAlign and NMS are ATen-only: the loading process needs neither
    # mrcnn_plugin nor torchvision's operators.
    code = (
        "import sys, torch\n"
        "torch.set_num_threads(2)\n"
        "m = torch.jit.load(sys.argv[1])\n"
        "inputs = torch.load(sys.argv[2])\n"
        "with torch.no_grad():\n"
        "    torch.save(m(inputs), sys.argv[3])\n"
        "assert 'mrcnn_plugin' not in sys.modules and 'torchvision' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code, str(model_path), str(inputs_path), str(out_path)], check=True,
                   cwd=tmp_path)
    reloaded = torch.load(out_path)
    for a, b in zip(reloaded, expected):
        assert_same_detections(a, b)
