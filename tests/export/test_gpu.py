"""The CUDA paths of the deployment: the exported model, mrcnn_infer, mrcnn_serve and the Triton
wrapper on a GPU give the CPU's detections (same count and classes, scores within 1e-3, boxes
within 0.5 px). Without a GPU these tests skip, and the service's --device cuda is an error that
names the missing GPU. scripts/gpu_check.sh runs them with the GPU benchmarks."""
import json
import subprocess

import pytest
import torch

from mrcnn_plugin.data.detection_utils import read_image_tensor
from mrcnn_plugin.export import load_exported
from mrcnn_plugin.export.serve_client import ServeProcess, request

HAS_GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA GPU on this machine")


@pytest.fixture(scope="module")
def photos(shared_dir):
    return sorted((shared_dir / "data" / "coco-mini" / "val2017").glob("*.jpg"))[:2]


def _assert_same_detections(gpu: dict, cpu: dict) -> None:
    """gpu, cpu: {"boxes": [N, 4], "scores": [N], "classes": [N]} as tensors or lists."""
    g = {k: torch.as_tensor(gpu[k]).cpu().float() for k in ("boxes", "scores", "classes")}
    c = {k: torch.as_tensor(cpu[k]).cpu().float() for k in ("boxes", "scores", "classes")}
    assert g["scores"].shape == c["scores"].shape
    assert torch.equal(g["classes"], c["classes"])
    assert torch.allclose(g["scores"], c["scores"], atol=1e-3)
    assert torch.allclose(g["boxes"], c["boxes"], atol=0.5)


def _json_detections(answer: dict) -> dict:
    dets = answer["detections"]
    return {"boxes": [d["box"] for d in dets] or torch.zeros(0, 4), "scores": [d["score"] for d in dets],
            "classes": [d["class"] for d in dets]}


@pytest.fixture(scope="module")
def cpu_results(tiny_model_ts, photos):
    module, _ = load_exported(str(tiny_model_ts))
    with torch.no_grad():
        return [module([read_image_tensor(str(p))])[0] for p in photos]


@needs_gpu
def test_exported_model_on_cuda_equals_cpu(tiny_model_ts, photos, cpu_results):
    """load_exported(..., device="cuda"): images in host memory, results on the GPU, equal to the CPU's."""
    module, _ = load_exported(str(tiny_model_ts), device="cuda")
    with torch.no_grad():
        for path, cpu in zip(photos, cpu_results):
            _assert_same_detections(module([read_image_tensor(str(path))])[0], cpu)


@needs_gpu
def test_mrcnn_infer_cuda_equals_cpu(cpp_build, tiny_model_ts, photos, cpu_results, tmp_path):
    """mrcnn_infer --device cuda --json on two photos: the CPU model's detections."""
    out = tmp_path / "gpu.json"
    run = subprocess.run([str(cpp_build / "mrcnn_infer"), "--model", str(tiny_model_ts), "--device", "cuda",
                          "--json", str(out), *map(str, photos)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    images = json.loads(out.read_text())["images"]
    for answer, cpu in zip(images, cpu_results):
        _assert_same_detections(_json_detections(answer), cpu)


@needs_gpu
def test_mrcnn_serve_cuda_equals_cpu(cpp_build, tiny_model_ts, photos, cpu_results):
    """mrcnn_serve --device cuda: ready, answers each photo with the CPU's detections, reports
    the device in /metrics, exits 0 on SIGTERM."""
    service = ServeProcess(cpp_build / "mrcnn_serve", tiny_model_ts, "--device", "cuda")
    try:
        for path, cpu in zip(photos, cpu_results):
            status, _, body = request(service.port, "POST", "/v1/detect?score_threshold=0", path.read_bytes(),
                                      "image/jpeg")
            assert status == 200, body[:200]
            _assert_same_detections(_json_detections(json.loads(body)), cpu)
        assert any('device="cuda"' in key for key in service.metrics())
    finally:
        assert service.stop() == 0


@needs_gpu
def test_triton_wrapper_on_cuda(tiny_model_ts, photos, cpu_results, tmp_path):
    """The Triton wrapper loaded on the GPU as the backend loads it (map_location cuda) gives
    the CPU's detections."""
    from mrcnn_plugin.export.triton import write_triton_repository

    folder = write_triton_repository(str(tiny_model_ts), str(tmp_path), device="cuda")
    wrapper = torch.jit.load(str(folder / "1" / "model.pt"), map_location="cuda")
    with torch.inference_mode():
        for path, cpu in zip(photos, cpu_results):
            boxes, scores, classes = wrapper(read_image_tensor(str(path)).cuda())[:3]
            _assert_same_detections({"boxes": boxes, "scores": scores, "classes": classes}, cpu)


@pytest.mark.skipif(HAS_GPU, reason="the error case needs a machine without a GPU")
def test_serve_cuda_without_gpu_is_an_error(cpp_build, tiny_model_ts):
    """mrcnn_serve --device cuda on a machine without a GPU exits 2 with one line naming it."""
    run = subprocess.run([str(cpp_build / "mrcnn_serve"), "--model", str(tiny_model_ts), "--device", "cuda",
                          "--port", "0"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "no CUDA GPU" in run.stderr and run.stderr.strip().count("\n") == 0, run.stderr
