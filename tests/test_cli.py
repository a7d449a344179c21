"""The `mrcnn` command."""
import json

from mrcnn_plugin.cli import main


def test_info_prints_parameters_and_flops(capsys, shared_dir):
    """`mrcnn info` reports the R50-FPN Mask R-CNN's parameter count (equal to the reference
    model's, summed from shared/golden/reference_state_dict_keys.json) and its FLOPs."""
    reference = json.loads((shared_dir / "golden" / "reference_state_dict_keys.json").read_text())
    expected = 0
    for key, shape in reference["mask_rcnn_R_50_FPN"].items():
        if not key.endswith(("running_mean", "running_var")) and ".norm." not in key:
            n = 1
            for s in shape:
                n *= s
            expected += n
    assert main(["info", "--config-file", "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
                 "--height", "128", "--width", "192", "MODEL.DEVICE", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"parameters: {expected:,}" in out
    gflops = float(out.split("multiply-adds (fvcore 'flops'): ")[1].split(" G")[0])
    assert gflops > 0


# ----------------------------------------------------------------------------- the one error path

import pickle  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from mrcnn_plugin.cli import EXIT_STATUS  # noqa: E402
from tiny_models import tiny_mask_cfg  # noqa: E402

MASK_CONFIG = "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    """A tiny model's config file, and checkpoints that are truncated, hostile and missing."""
    d = tmp_path_factory.mktemp("cli_errors")
    (d / "tiny.yaml").write_text(tiny_mask_cfg().dump())
    torch.save({"model": {"w": torch.zeros(1000)}}, d / "good.pth")
    data = (d / "good.pth").read_bytes()
    (d / "truncated.pth").write_bytes(data[: len(data) // 2])

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (d / "evil.pkl").write_bytes(pickle.dumps({"model": Evil()}))
    return d


def _cases(d):
    tiny = str(d / "tiny.yaml")
    return [
        ("info missing config", ["info", "--config-file", str(d / "nope.yaml")], "file", "nope.yaml"),
        ("info unknown key", ["info", "--config-file", MASK_CONFIG, "MODEL.ROI_HEADS.NUM_CLASES", "3"], "usage",
         "NUM_CLASES"),
        ("info bad value", ["info", "--config-file", MASK_CONFIG, "MODEL.ROI_HEADS.NUM_CLASSES", "0"], "usage",
         "NUM_CLASSES"),
        ("export missing weights", ["export", "--config-file", tiny, "--output", str(d / "o1"), "MODEL.WEIGHTS",
                                    str(d / "missing.pth")], "file", "missing.pth"),
        ("export truncated weights", ["export", "--config-file", tiny, "--output", str(d / "o2"), "MODEL.WEIGHTS",
                                      str(d / "truncated.pth")], "bad file", "truncated.pth"),
        ("export hostile weights", ["export", "--config-file", tiny, "--output", str(d / "o3"), "MODEL.WEIGHTS",
                                    str(d / "evil.pkl")], "bad file", "evil.pkl"),
        ("demo missing model", ["demo", "--model-ts", str(d / "none.ts"), "--input", tiny, "--output",
                                str(d / "demo")], "file", "none.ts"),
        ("train unknown dataset", ["train", "--config-file", tiny, "DATASETS.TRAIN", "('no_such_set',)",
                                   "OUTPUT_DIR", str(d / "train")], "usage", "no_such_set"),
        ("train cuda without gpu", ["train", "--config-file", tiny, "MODEL.DEVICE", "cuda", "OUTPUT_DIR",
                                    str(d / "train2")], "device", "CUDA is not available"),
        ("convert missing input", ["convert", "--from", "detectron2", str(d / "absent.pkl"), str(d / "out.pth")],
         "file", "absent.pkl"),
        ("convert truncated input", ["convert", "--from", "detectron2", str(d / "truncated.pth"),
                                     str(d / "out.pth")], "bad file", "truncated.pth"),
        ("bench cuda without gpu", ["bench", "--device", "cuda", "--output", str(d / "bench")], "device", "no CUDA"),
    ]


@pytest.mark.parametrize("index", range(12), ids=[c[0] for c in _cases(__import__("pathlib").Path("."))])
def test_user_errors_are_one_line_and_a_documented_status(index, bad_files, capsys, monkeypatch):
    """Each user error of each subcommand: exit status EXIT_STATUS[kind], stderr one line
    `mrcnn <command>: error: ...` naming what is wrong, no traceback, nothing half-written."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    name, argv, kind, names = _cases(bad_files)[index]
    capsys.readouterr()
    assert main(argv) == EXIT_STATUS[kind], name
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith(f"mrcnn {argv[0]}: error: ")]
    assert len(errors) == 1 and names in errors[0], (name, err)
    assert not any("Traceback" in line for line in err), (name, err)
    assert not (bad_files / "out.pth").exists() and not (bad_files / "o2" / "model.ts").exists()


def test_debug_lets_the_exception_through(monkeypatch):
    """--debug (and MRCNN_DEBUG=1) show the real exception instead of the one line."""
    with pytest.raises(FileNotFoundError):
        main(["--debug", "info", "--config-file", "nope.yaml"])
    monkeypatch.setenv("MRCNN_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["info", "--config-file", "nope.yaml"])


def test_an_unexpected_error_is_one_line_with_a_hint(monkeypatch, capsys):
    """A bug (any other exception) is still one line, status 70, pointing at --debug."""
    import mrcnn_plugin.cli as cli

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "_cmd_info", broken)
    assert main(["info", "--config-file", MASK_CONFIG]) == EXIT_STATUS["internal"]
    err = capsys.readouterr().err.strip()
    assert err == "mrcnn info: error: ZeroDivisionError: division by zero (run with --debug for the traceback)"
