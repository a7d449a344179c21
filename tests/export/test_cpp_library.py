"""The C++ library mrcnn::detector (export/cpp): its GoogleTest tests pass under ctest with the
models and photos this module provides, and a separate CMake project links it through an
installed find_package(mrcnn) and through add_subdirectory."""
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from golden_utils import GOLDEN_CONFIGS, build_golden_model
from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.data.detection_utils import read_image_tensor
from mrcnn_plugin.export import ExportableDetector, export_model
from mrcnn_plugin.modeling.fast_inference import prepare_for_inference

REPO = Path(__file__).resolve().parents[2]
NUM_IMAGES = 3



def column_major_rle(mask: np.ndarray) -> list:
    """COCO uncompressed RLE counts of a bool [H, W] mask: runs down the columns, zeros first."""
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], changes])).tolist()


def _detections_json(out: dict) -> list:
    """One image's Python results in mrcnn_infer's --json schema."""
    dets = []
    for i in range(out["boxes"].shape[0]):
        d = {"class": int(out["classes"][i]), "score": float(out["scores"][i]), "box": out["boxes"][i].tolist()}
        if "masks" in out:
            m = out["masks"][i].numpy().astype(bool)
            d["mask_area"] = int(m.sum())
            d["mask_rle"] = {"size": list(m.shape), "counts": column_major_rle(m)}
        if "keypoints" in out:
            d["keypoints"] = out["keypoints"][i].flatten().tolist()
        dets.append(d)
    return dets


@pytest.fixture(scope="module")
def reference(shared_dir, tmp_path_factory) -> Path:
    """The R50-FPN mask model exported, and its eager twin's detections on three coco-mini val
    photos (of different sizes) in mrcnn_infer's JSON schema."""
    torch.set_num_threads(2)
    name = "mask_rcnn_R_50_FPN"
    model = build_golden_model(shared_dir, name)
    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / "configs" / GOLDEN_CONFIGS[name]))
    cfg.MODEL.DEVICE = "cpu"
    out_dir = tmp_path_factory.mktemp("library_reference")
    ts = export_model(cfg, str(out_dir), model=model)
    eager = ExportableDetector(prepare_for_inference(model), cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    photos = sorted((shared_dir / "data" / "coco-mini" / "val2017").glob("*.jpg"))[:NUM_IMAGES]
    images = []
    for path in photos:
        with torch.no_grad():
            images.append({"file": str(path), "detections": _detections_json(eager([read_image_tensor(str(path))])[0])})
    assert len({Image.open(p).size for p in photos}) == NUM_IMAGES, "the batch test needs different sizes"
    ref = out_dir / "reference.json"
    ref.write_text(json.dumps({"model": str(ts), "images": images}))
    return ref


def test_column_major_rle_helper():
    """The reference's RLE follows COCO: counts down columns, starting with background."""
    m = np.zeros((3, 4), bool)
    m[0, 1] = m[1, 1] = m[2, 3] = True
    assert column_major_rle(m) == [3, 2, 6, 1]
    assert column_major_rle(np.ones((2, 2), bool)) == [0, 4]


def test_gtest_suite_passes(cpp_build, tiny_model_ts, reference):
    """ctest runs every GoogleTest test of export/cpp/tests (parity with Python on three photos,
    batch == one by one, 8 threads x 5 calls == serial, errors naming the input, CUDA or its
    error); all pass and none is skipped."""
    env = dict(os.environ, MRCNN_TEST_MODEL=str(tiny_model_ts), MRCNN_TEST_REFERENCE=str(reference))
    run = subprocess.run(["ctest", "--test-dir", str(cpp_build), "--output-on-failure", "--timeout", "600",
                          "--exclude-regex", r"^(triton|plan)\."],  # test_triton.py, test_cpp_plan.py run those
                         capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    summary = re.search(r"(\d+)% tests passed, (\d+) tests failed out of (\d+)", run.stdout)
    assert summary and summary.group(1) == "100" and int(summary.group(3)) >= 6, run.stdout[-3000:]
    assert "Skipped" not in run.stdout and "Not Run" not in run.stdout, run.stdout[-3000:]


def _build_consumer(build: Path, *cmake_args: str) -> Path:
    src = REPO / "export" / "cpp" / "tests" / "consumer"
    subprocess.run(["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", *cmake_args],
                   check=True, capture_output=True, text=True)
    subprocess.run(["cmake", "--build", str(build), "-j2"], check=True, capture_output=True, text=True)
    return build / "consumer"


def test_installed_package_and_add_subdirectory(cpp_build, tiny_model_ts, tmp_path):
    """`cmake --install` writes the header, libmrcnn_detector.so and mrcnnConfig.cmake; a
    project with find_package(mrcnn) builds against them without torch's headers and runs the
    tiny model; the same project builds with add_subdirectory(export/cpp) too."""
    prefix = tmp_path / "prefix"
    subprocess.run(["cmake", "--install", str(cpp_build), "--prefix", str(prefix)], check=True, capture_output=True)
    assert (prefix / "include" / "mrcnn" / "detector.hpp").exists()
    assert list(prefix.glob("lib*/cmake/mrcnn/mrcnnConfig.cmake"))
    torch_dir = Path(torch.__file__).parent
    for label, args in [("find_package", [f"-DCMAKE_PREFIX_PATH={prefix}"]),
                        ("add_subdirectory", [f"-DMRCNN_SOURCE_DIR={REPO / 'export' / 'cpp'}",
                                              f"-DMRCNN_TORCH_DIR={torch_dir}"])]:
        consumer = _build_consumer(tmp_path / label, *args)
        run = subprocess.run([str(consumer), str(tiny_model_ts), "160", "120"], capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, (label, run.stderr)
        assert re.match(r"160 x 120: \d+ detections", run.stdout), (label, run.stdout)
    flags = (tmp_path / "find_package" / "CMakeFiles" / "consumer.dir" / "flags.make").read_text()
    assert "torch" not in flags, "the installed package must not need torch's headers"
