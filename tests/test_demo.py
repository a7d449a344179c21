"""The `mrcnn demo` command: pictures of a model's detections, from a config or an exported model.ts."""
import argparse
import contextlib
import io
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from PIL import Image

from mrcnn_plugin import demo
from mrcnn_plugin.data import read_image

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(REPO_ROOT / "configs" / "COCO-InstanceSegmentation" / "mask_rcnn_R_50_FPN_1x.yaml")
# A tiny random Mask R-CNN (fast on two shared CPU cores), every detection kept.
TINY_OPTS: List[str] = [
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32", "INPUT.MIN_SIZE_TEST", "128",
    "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
]


def _coco_images(shared_dir: Path, n: int) -> List[str]:
    images = sorted((shared_dir / "data" / "coco-mini" / "val2017").glob("*.jpg"))[:n]
    assert len(images) == n, "coco-mini val2017 images not found"
    return [str(p) for p in images]


def _original_hw(path: str):
    return read_image(path, "RGB").shape[:2]


class _Spy:
    """Records what the demo hands to the drawing function and to the model, then calls the real ones."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.class_names: List[List[str]] = []
        self.model_inputs: List[Dict] = []
        import mrcnn_plugin.utils.visualizer as visualizer

        real_draw = visualizer.draw_instances

        def draw(image, boxes, scores, classes, class_names, **kwargs):
            self.class_names.append(list(class_names))
            return real_draw(image, boxes, scores, classes, class_names, **kwargs)

        monkeypatch.setattr(visualizer, "draw_instances", draw)
        import mrcnn_plugin.modeling as modeling

        real_build = modeling.build_model

        def build(cfg):
            model = real_build(cfg)
            real_inference = model.inference

            def inference(batched_inputs, *args, **kwargs):
                self.model_inputs.extend({"shape": tuple(x["image"].shape), "dtype": x["image"].dtype,
                                          "height": x["height"], "width": x["width"]} for x in batched_inputs)
                return real_inference(batched_inputs, *args, **kwargs)

            model.inference = inference
            return model

        monkeypatch.setattr(modeling, "build_model", build)


@pytest.fixture(scope="module")
def config_run(shared_dir, tmp_path_factory):
    """One `mrcnn demo --config-file` run on two coco-mini images: (exit code, stdout, images, out dir, spy)."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    images = _coco_images(shared_dir, 2)
    out_dir = tmp_path_factory.mktemp("demo_config")
    with pytest.MonkeyPatch.context() as mp:
        spy = _Spy(mp)
        stdout = io.StringIO()  # capsys is per test; this run is shared by the module's tests
        with contextlib.redirect_stdout(stdout):
            code = demo.main(["--config-file", CONFIG, "--input", *images, "--output", str(out_dir),
                              "--confidence-threshold", "0", *TINY_OPTS])
    return code, stdout.getvalue(), images, out_dir, spy


def test_config_demo_writes_one_png_per_image_at_original_size(config_run):
    """With a tiny random model, two coco-mini photos give two PNGs named after them, each the
    original photo's size, and one printed line per photo with its detection count and time."""
    code, out, images, out_dir, _ = config_run
    assert code == 0
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(Path(p).stem + ".png" for p in images)
    for path in images:
        with Image.open(out_dir / (Path(path).stem + ".png")) as picture:
            assert picture.format == "PNG" and picture.mode == "RGB"
            assert (picture.height, picture.width) == _original_hw(path)
        line = next(l for l in out.splitlines() if l.startswith(path))
        assert "detections with score >= 0" in line and " s -> " in line
        assert int(line.split(": ")[1].split(" ")[0]) > 0


def test_config_demo_resizes_like_detectron2_and_reports_at_original_size(config_run):
    """The model gets uint8 CHW images resized to the test size (short side INPUT.MIN_SIZE_TEST,
    detectron2's rounding) with height/width the original size; names come from DATASETS.TEST[0]."""
    _, _, images, _, spy = config_run
    from mrcnn_plugin.data.transforms import resize_shortest_edge_size

    # The fast mode's preparation runs the model on a sample of its own first; the photos come last.
    assert len(spy.model_inputs) >= 2
    for path, seen in zip(images, spy.model_inputs[-2:]):
        h, w = _original_hw(path)
        assert seen["shape"] == (3, *resize_shortest_edge_size(h, w, 128, 1333))
        assert seen["dtype"] == torch.uint8
        assert (seen["height"], seen["width"]) == (h, w)
    assert spy.class_names[0][:3] == ["person", "bicycle", "car"]  # coco_2017_val metadata


def test_corrupt_input_is_named_and_the_others_processed(shared_dir, tmp_path, capsys):
    """A corrupt image, a missing file and a pattern matching nothing are each reported by name
    and skipped; the good image is still drawn; the exit code is 1."""
    good = _coco_images(shared_dir, 1)[0]
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"this is not a JPEG")
    missing = tmp_path / "missing.png"
    out_dir = tmp_path / "out"
    code = demo.main(["--config-file", CONFIG, "--input", str(corrupt), str(missing), str(tmp_path / "none*.png"),
                      good, "--output", str(out_dir), *TINY_OPTS, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.05"])
    captured = capsys.readouterr()
    assert code == 1
    assert [p.name for p in out_dir.iterdir()] == [Path(good).stem + ".png"]
    assert str(corrupt) in captured.err and str(missing) in captured.err and "none*.png" in captured.err
    assert "3 input(s) failed" in captured.err
    assert good in captured.out


def test_model_ts_demo_uses_the_exported_model_and_its_names(shared_dir, tmp_path, monkeypatch, capsys):
    """`--model-ts` runs a tiny model exported with export_model (no config, resizing inside the
    model) and draws with the class names from its metadata, at the photo's original size."""
    from mrcnn_plugin.config import get_cfg
    from mrcnn_plugin.data import MetadataCatalog
    from mrcnn_plugin.export import export_model, load_exported
    from mrcnn_plugin.modeling import build_model

    names = ["circle", "square", "triangle"]
    MetadataCatalog.get("demo_test_three_shapes").set(thing_classes=names)
    torch.manual_seed(0)
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    # Three classes and fewer proposals: the exported model's ATen-only NMS is slow on the
    # 80 x 1000 candidates that SCORE_THRESH_TEST 0 leaves with COCO's classes.
    cfg.merge_from_list(TINY_OPTS + ["MODEL.ROI_HEADS.NUM_CLASSES", "3", "MODEL.RPN.POST_NMS_TOPK_TEST", "200",
                                     "DATASETS.TEST", "('demo_test_three_shapes',)"])
    path = export_model(cfg, str(tmp_path / "export"), model=build_model(cfg).eval())
    _, meta = load_exported(str(path))
    assert meta["classes"] == names
    spy = _Spy(monkeypatch)
    image = _coco_images(shared_dir, 2)[1]
    out_dir = tmp_path / "out"
    code = demo.main(["--model-ts", str(path), "--input", image, "--output", str(out_dir),
                      "--confidence-threshold", "0"])
    assert code == 0
    with Image.open(out_dir / (Path(image).stem + ".png")) as picture:
        assert (picture.height, picture.width) == _original_hw(image)
    assert spy.class_names == [names]
    assert spy.model_inputs == []  # no model was built from a config
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith(image))
    assert int(line.split(": ")[1].split(" ")[0]) > 0


def test_model_ts_rejects_config_overrides(tmp_path):
    """Config overrides cannot change an exported model: asking for them is an error, not ignored."""
    args = demo.build_parser().parse_args(["--model-ts", str(tmp_path / "model.ts"), "--input", "a.jpg",
                                           "--output", str(tmp_path), "MODEL.DEVICE", "cpu"])
    with pytest.raises(ValueError, match="do not apply to --model-ts"):
        demo.run_demo(args)


def test_expand_inputs_folders_globs_and_duplicates(tmp_path):
    """A folder gives its .jpg/.jpeg/.png files (any case, sorted, not subfolders'), a glob its
    matches; duplicates are dropped; a plain path passes through; empty folders/patterns are problems."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name in ["b.JPG", "a.png", "c.jpeg", "notes.txt", "sub/d.jpg"]:
        (folder / name).write_bytes(b"")
    (tmp_path / "empty").mkdir()
    paths, problems = demo.expand_inputs([str(folder), str(folder / "*.png"), str(tmp_path / "x.jpg"),
                                          str(tmp_path / "empty"), str(tmp_path / "*.gif")])
    assert paths == [str(folder / "a.png"), str(folder / "b.JPG"), str(folder / "c.jpeg"), str(tmp_path / "x.jpg")]
    assert len(problems) == 2 and "empty" in problems[0] and "*.gif" in problems[1]


def test_output_names_do_not_collide():
    """Two inputs with the same stem get <stem>.png and <stem>_2.png, so neither picture is overwritten."""
    names = demo._output_paths(["a/x.jpg", "b/x.png", "y.jpg"], "out")
    assert [p.name for p in names.values()] == ["x.png", "x_2.png", "y.png"]


def test_overrides_right_after_input_are_config_overrides():
    """KEY VALUE pairs typed right after the --input files (argparse puts them in --input) are
    recognised as config overrides."""
    inputs, opts = demo._split_overrides(["a.jpg", "b.jpg", "MODEL.DEVICE", "cpu"], ["INPUT.FORMAT", "RGB"])
    assert inputs == ["a.jpg", "b.jpg"]
    assert opts == ["MODEL.DEVICE", "cpu", "INPUT.FORMAT", "RGB"]


def test_add_demo_parser_registers_the_subcommand():
    """add_demo_parser adds `demo` to a subparsers object, with run_demo as its func."""
    parser = argparse.ArgumentParser(prog="mrcnn")
    demo.add_demo_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", "--config-file", "c.yaml", "--input", "a.jpg", "--output", "o",
                              "--confidence-threshold", "0.7", "MODEL.DEVICE", "cpu"])
    assert args.func is demo.run_demo
    assert args.confidence_threshold == 0.7 and args.opts == ["MODEL.DEVICE", "cpu"]
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--config-file", "c.yaml", "--model-ts", "m.ts", "--input", "a", "--output", "o"])
