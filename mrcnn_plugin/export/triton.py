"""A model repository for Triton Inference Server's PyTorch (LibTorch) backend.

    DIR/<name>/config.pbtxt    the model configuration (backend "pytorch")
    DIR/<name>/1/model.pt      a scripted wrapper over model.ts with the backend's calling convention
    DIR/<name>/model.json      classes, keypoint names, input format (Triton ignores it)

The backend calls `forward` with one tensor per configured input, positionally, and reads
the outputs from the returned tuple by the index after "__" in each output's name. So the
wrapper takes one image, `IMAGE__0`: uint8 Tensor[3, H, W] in the model's colour order, any
H and W (one image per request, max_batch_size 0), and returns a tuple of tensors that
starts with BOXES__0 float32 [N, 4], SCORES__1 float32 [N], CLASSES__2 int64 [N], and goes
on with MASKS__3 uint8 [N, H, W] and/or KEYPOINTS__k float32 [N, K, 3] where the model has
those heads. Which tuple the model returns is fixed when the repository is written.
"""
import json
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

__all__ = ["write_triton_repository", "triton_outputs", "TRITON_INPUT"]

TRITON_INPUT = "IMAGE__0"


class _TritonWrapper(nn.Module):
    """Shared by the wrappers below: one image through the exported detector."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def _detect(self, image: Tensor) -> Dict[str, Tensor]:
        return self.detector([image])[0]


class _Boxes(_TritonWrapper):
    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        r = self._detect(image)
        return r["boxes"], r["scores"], r["classes"]


class _BoxesMasks(_TritonWrapper):
    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        r = self._detect(image)
        return r["boxes"], r["scores"], r["classes"], r["masks"]


class _BoxesKeypoints(_TritonWrapper):
    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        r = self._detect(image)
        return r["boxes"], r["scores"], r["classes"], r["keypoints"]


class _BoxesMasksKeypoints(_TritonWrapper):
    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        r = self._detect(image)
        return r["boxes"], r["scores"], r["classes"], r["masks"], r["keypoints"]


# (key in model.ts's result, Triton data type, dims with -1 for variable sizes)
_OUTPUT_SPECS = {
    "boxes": ("TYPE_FP32", [-1, 4]),
    "scores": ("TYPE_FP32", [-1]),
    "classes": ("TYPE_INT64", [-1]),
    "masks": ("TYPE_UINT8", [-1, -1, -1]),
    "keypoints": ("TYPE_FP32", [-1, -1, 3]),
}
_WRAPPERS = {
    (False, False): _Boxes, (True, False): _BoxesMasks,
    (False, True): _BoxesKeypoints, (True, True): _BoxesMasksKeypoints,
}


def triton_outputs(metadata: Dict) -> List[Tuple[str, str, str, List[int]]]:
    """[(Triton output name, model.ts result key, data type, dims)] in tuple order, for a
    model whose model.json is `metadata`."""
    keys = ["boxes", "scores", "classes"] + [k for k in ("masks", "keypoints") if k in metadata["outputs"]]
    return [(f"{k.upper()}__{i}", k, *_OUTPUT_SPECS[k]) for i, k in enumerate(keys)]


def _dims(dims: List[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _config_pbtxt(name: str, metadata: Dict, device: str, instances: int) -> str:
    outputs = triton_outputs(metadata)
    colour = metadata["input"]["format"]
    lines = [
        f"# {name}: Mask R-CNN exported by mrcnn_plugin (one image per request).",
        f"# {TRITON_INPUT}: uint8 [3, H, W], {colour} channel order, original size; the model resizes.",
        "# Outputs are in original image pixels; CLASSES index the class names in model.json.",
        f'name: "{name}"',
        'backend: "pytorch"',
        "max_batch_size: 0",
        "input [",
        f'  {{ name: "{TRITON_INPUT}" data_type: TYPE_UINT8 dims: [ 3, -1, -1 ] }}',
        "]",
        "output [",
        ",\n".join(f'  {{ name: "{n}" data_type: {t} dims: {_dims(d)} }}' for n, _, t, d in outputs),
        "]",
        f"instance_group [ {{ kind: {'KIND_GPU' if device == 'cuda' else 'KIND_CPU'} count: {instances} }} ]",
        # The library runs the model under InferenceMode too; the backend defaults to no_grad.
        'parameters: { key: "INFERENCE_MODE" value: { string_value: "true" } }',
        # TorchScript's profiling executor specializes on the first calls: pay them at load.
        "model_warmup [ {",
        '  name: "one_photo_sized_image" batch_size: 1',
        f'  inputs {{ key: "{TRITON_INPUT}" value: {{ data_type: TYPE_UINT8 dims: [ 3, 480, 640 ] zero_data: true }} }}',
        "  count: 2",
        "} ]",
    ]
    return "\n".join(lines) + "\n"


def write_triton_repository(model_ts: str, repository: str, name: str = "mrcnn", device: str = "cpu",
                            instances: int = 1) -> Path:
    """Writes repository/<name>/{config.pbtxt, 1/model.pt, model.json} from an exported
    model.ts; returns the model's folder. device "cpu" or "cuda" sets the instance group."""
    from .exporter import load_exported

    if device not in ("cpu", "cuda"):
        raise ValueError(f"--triton-device must be 'cpu' or 'cuda', got {device!r}")
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"--triton-name must be a plain folder name, got {name!r}")
    detector, metadata = load_exported(str(model_ts))
    has = (("masks" in metadata["outputs"]), ("keypoints" in metadata["outputs"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        wrapper = torch.jit.script(_WRAPPERS[has](detector).eval())
    folder = Path(repository) / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    meta_json = json.dumps(metadata, indent=2)
    torch.jit.save(wrapper, str(folder / "1" / "model.pt"), _extra_files={"model.json": meta_json})
    (folder / "config.pbtxt").write_text(_config_pbtxt(name, metadata, device, instances))
    (folder / "model.json").write_text(meta_json)
    return folder
