"""`mrcnn export --triton`: the Triton model repository. Its config.pbtxt describes the wrapper
it ships (input and output names, types, shapes), and the wrapper called as Triton's PyTorch
backend calls it (from C++, positional tensors, outputs by index) equals model.ts exactly on
two coco-mini photos. Triton itself is not installed here and is not run."""
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from mrcnn_plugin.cli import main
from mrcnn_plugin.data.detection_utils import read_image_tensor
from mrcnn_plugin.export import export_model, load_exported
from mrcnn_plugin.export.triton import TRITON_INPUT, write_triton_repository
from mrcnn_plugin.modeling import build_model
from tiny_models import tiny_cfg, tiny_mask_cfg

_TRITON_DTYPES = {"TYPE_UINT8": torch.uint8, "TYPE_FP32": torch.float32, "TYPE_INT64": torch.int64}


def _parse_config(text: str) -> dict:
    """The fields of config.pbtxt that the backend checks: name, backend, max_batch_size and,
    per input and output, (name, data_type, dims)."""
    def tensors(section: str):
        block = re.search(rf"^{section} \[\n(.*?)\n\]", text, re.S | re.M).group(1)
        return [(n, t, [int(d) for d in dims.split(",")])
                for n, t, dims in re.findall(r'name: "(\w+)" data_type: (\w+) dims: \[ ([-\d, ]+) \]', block)]
    return {"name": re.search(r'^name: "(\w+)"', text, re.M).group(1),
            "backend": re.search(r'^backend: "(\w+)"', text, re.M).group(1),
            "max_batch_size": int(re.search(r"^max_batch_size: (\d+)", text, re.M).group(1)),
            "input": tensors("input"), "output": tensors("output")}


def _photos(shared_dir: Path, count: int) -> list:
    return sorted((shared_dir / "data" / "coco-mini" / "val2017").glob("*.jpg"))[:count]



@pytest.fixture(scope="module")
def repository(tiny_model_ts, tmp_path_factory) -> Path:
    return write_triton_repository(str(tiny_model_ts), str(tmp_path_factory.mktemp("triton")), name="tiny_mask")


def test_layout_and_config_match_the_wrapper(repository, tiny_model_ts, shared_dir):
    """DIR/<name>/config.pbtxt and DIR/<name>/1/model.pt; the config's input is the wrapper's one
    forward argument (uint8 [3, -1, -1]); its outputs, in tuple order, have the dtypes and ranks
    the wrapper really returns, with the fixed sizes (4 box coordinates) where the config fixes them."""
    assert (repository / "1" / "model.pt").is_file() and (repository / "model.json").is_file()
    config = _parse_config((repository / "config.pbtxt").read_text())
    assert config["name"] == repository.name == "tiny_mask"
    assert config["backend"] == "pytorch" and config["max_batch_size"] == 0
    wrapper = torch.jit.load(str(repository / "1" / "model.pt"))
    args = [a for a in wrapper.forward.schema.arguments if a.name != "self"]
    assert len(args) == len(config["input"]) == 1 and str(args[0].type) == "Tensor"
    assert config["input"][0] == (TRITON_INPUT, "TYPE_UINT8", [3, -1, -1])
    image = read_image_tensor(str(_photos(shared_dir, 1)[0]))
    with torch.inference_mode():
        outputs = wrapper(image)
    assert isinstance(outputs, tuple) and len(outputs) == len(config["output"])
    names = [n for n, _, _ in config["output"]]
    assert names == ["BOXES__0", "SCORES__1", "CLASSES__2", "MASKS__3"]
    for (name, dtype, dims), tensor in zip(config["output"], outputs):
        assert int(name.rsplit("__", 1)[1]) == names.index(name)
        assert tensor.dtype == _TRITON_DTYPES[dtype], name
        assert tensor.dim() == len(dims), name
        assert all(d == -1 or d == s for d, s in zip(dims, tensor.shape)), (name, dims, tensor.shape)
    assert outputs[3].shape[1:] == image.shape[1:], "masks are at the original image size"


def test_cpp_positional_call_equals_model_ts(cpp_build, repository, tiny_model_ts, shared_dir):
    """The C++ check (export/cpp/tests/triton_test.cpp): torch::jit::load(model.pt), forward(image)
    with one positional tensor, outputs by config index, each equal to model.ts's result on
    two coco-mini photos; it runs (not skipped) and passes."""
    photos = _photos(shared_dir, 2)
    env = dict(os.environ, MRCNN_TEST_TRITON_MODEL=str(repository), MRCNN_TEST_MODEL=str(tiny_model_ts),
               MRCNN_TEST_PHOTOS=":".join(str(p) for p in photos))
    run = subprocess.run(["ctest", "--test-dir", str(cpp_build), "--output-on-failure", "--tests-regex", r"^triton\."],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert re.search(r"100% tests passed, 0 tests failed out of 1\b", run.stdout), run.stdout[-2000:]
    assert "Skipped" not in run.stdout, run.stdout[-2000:]


def test_keypoint_model_has_a_keypoints_output(tmp_path):
    """A keypoint model's repository (no mask head) ends its tuple with KEYPOINTS__3, float [N, 17, 3]."""
    cfg = tiny_cfg(keypoints=True)
    torch.manual_seed(0)
    ts = export_model(cfg, str(tmp_path / "ts"), model=build_model(cfg).eval())
    folder = write_triton_repository(str(ts), str(tmp_path / "repo"))
    config = _parse_config((folder / "config.pbtxt").read_text())
    assert [o[0] for o in config["output"]] == ["BOXES__0", "SCORES__1", "CLASSES__2", "KEYPOINTS__3"]
    with torch.inference_mode():
        out = torch.jit.load(str(folder / "1" / "model.pt"))(torch.zeros(3, 96, 128, dtype=torch.uint8))
    assert len(out) == 4 and out[3].dtype == torch.float32 and tuple(out[3].shape[1:]) == (17, 3)


def test_cli_writes_the_repository(tmp_path, capsys):
    """`mrcnn export --triton DIR --triton-name NAME --triton-device cuda` writes the model.ts
    folder and the repository, with a GPU instance group; a bad name is a one-line error."""
    cfg = tiny_mask_cfg()
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(cfg.dump())
    rc = main(["export", "--config-file", str(config_file), "--output", str(tmp_path / "ts"),
               "--triton", str(tmp_path / "repo"), "--triton-name", "shapes", "--triton-device", "cuda"])
    assert rc == 0
    assert (tmp_path / "ts" / "model.ts").is_file()
    text = (tmp_path / "repo" / "shapes" / "config.pbtxt").read_text()
    assert "kind: KIND_GPU" in text and _parse_config(text)["name"] == "shapes"
    _, meta = load_exported(str(tmp_path / "repo" / "shapes" / "1" / "model.pt"))
    assert meta["classes"] == ["class_0"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--config-file", str(config_file), "--output", str(tmp_path / "ts2"),
              "--triton", str(tmp_path / "repo"), "--triton-name", "a/b"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--triton-name" in err and "Traceback" not in err
    assert not (tmp_path / "ts2").exists(), "a bad name is refused before anything is exported"
