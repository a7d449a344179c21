"""Runtime peers of `mrcnn bench`: torchvision's Mask R-CNN exported to ONNX and run by ONNX
Runtime and by OpenVINO, and detectron2 when it is importable.

The peers are optional (`pip install -e .[bench]`, or `bash scripts/setup_env.sh --bench`); one
that cannot run is reported with the reason instead of a row. Each takes the benchmark photo
as torchvision does (RGB float in [0, 1], original size; the graph resizes to 800 and pastes
masks at the original size) with the same seeded weights and zero score threshold as the
"torchvision eager" row, so it keeps its 100 detections too, on the same number of threads.
"""
import importlib.util
from pathlib import Path
from typing import Callable, List, Tuple

import torch
from torch import Tensor, nn

__all__ = ["PEERS", "PeerUnavailable", "peer_candidate", "peer_scores"]

PEERS = ["torchvision ONNX Runtime", "torchvision OpenVINO", "detectron2 eager"]


class PeerUnavailable(RuntimeError):
    """A peer that cannot run here; the message says why (a missing package, a failed export)."""


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise PeerUnavailable(f"{module} is not installed (pip install -e .[bench])")


def export_torchvision_onnx(model: nn.Module, image_rgb01: Tensor, path: Path) -> Path:
    """torchvision's detector (eval, CPU) as ONNX at `path`, any image size (TorchScript-based
    exporter, opset 17: torchvision's detection models export through it)."""
    if path.exists():
        return path
    _require("onnx")
    model = model.eval().cpu()
    try:
        torch.onnx.export(model, ([image_rgb01.cpu()],), str(path), opset_version=17, dynamo=False,
                          input_names=["image"], output_names=["boxes", "labels", "scores", "masks"],
                          dynamic_axes={"image": {1: "height", 2: "width"}, "boxes": {0: "n"}, "labels": {0: "n"},
                                        "scores": {0: "n"}, "masks": {0: "n", 2: "height", 3: "width"}})
    except Exception as e:  # noqa: BLE001 - reported as the peer's reason
        raise PeerUnavailable(f"torchvision's model did not export to ONNX: {' '.join(str(e).split())[:200]}")
    return path


def _onnxruntime_call(onnx_path: Path, image: "object", threads: int) -> Callable[[], "object"]:
    _require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Its pool spins after each run by default, which would take the CPUs from the candidate
    # timed next (the bench interleaves them): measured 2.3x torchvision eager with spinning on.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda: session.run(["scores"], {name: image})[0]


def _openvino_call(onnx_path: Path, image: "object", threads: int) -> Callable[[], "object"]:
    _require("openvino")
    import openvino as ov

    core = ov.Core()
    # float32 like every other row: on AMX CPUs OpenVINO would otherwise infer in bfloat16.
    compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU",
                                  {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    scores = [i for i, out in enumerate(compiled.outputs) if "scores" in out.get_names()][0]

    def call() -> "object":
        request.infer({0: image})
        return request.get_output_tensor(scores).data

    return call


def peer_scores(name: str, tv_model: nn.Module, image_rgb01: Tensor, work_dir: Path, threads: int,
                device: str = "cpu") -> Callable[[], "object"]:
    """call() -> the detections' scores (numpy [N]) from peer `name`; raises PeerUnavailable
    with the reason."""
    if device != "cpu":
        raise PeerUnavailable("the runtime peers run on CPU only")
    if name == "detectron2 eager":
        if importlib.util.find_spec("detectron2") is None:
            raise PeerUnavailable("detectron2 is not installed (its source is in shared/vendor; issue 23 builds it)")
        raise PeerUnavailable("detectron2 is importable but its bench row is not written yet (issue 23)")
    onnx_path = export_torchvision_onnx(tv_model, image_rgb01, work_dir / "torchvision_maskrcnn.onnx")
    image = image_rgb01.cpu().contiguous().numpy()
    try:
        if name == "torchvision ONNX Runtime":
            call = _onnxruntime_call(onnx_path, image, threads)
        elif name == "torchvision OpenVINO":
            call = _openvino_call(onnx_path, image, threads)
        else:
            raise ValueError(f"unknown peer {name!r}")
        call()  # fails here, not mid-benchmark, if the runtime cannot run the graph
    except PeerUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - reported as the peer's reason
        raise PeerUnavailable(f"{name} cannot run the graph: {' '.join(str(e).split())[:200]}")
    return call


def peer_candidate(name: str, tv_model: nn.Module, image_rgb01: Tensor, work_dir: Path, threads: int,
                   device: str = "cpu") -> Callable[[], int]:
    """call() -> the number of detections from peer `name` (a bench candidate); raises
    PeerUnavailable with the reason."""
    scores = peer_scores(name, tv_model, image_rgb01, work_dir, threads, device)
    return lambda: int(scores().shape[0])


def runtime_versions() -> List[Tuple[str, str]]:
    """(package, version) of the peer runtimes installed here."""
    out = []
    for module in ("onnxruntime", "openvino"):
        if importlib.util.find_spec(module) is not None:
            out.append((module, getattr(__import__(module), "__version__", "?")))
    return out
