"""Cityscapes instance segmentation: the loader, the built-in names, training on the records, and
the official-metric evaluator, on a 3-image split generated in the official layout
(tests/cityscapes_fixture.py)."""
import json
import math
import os
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from PIL import Image

from cityscapes_fixture import (HEIGHT, WIDTH, distributed_evaluation_worker, ground_truth_predictions,
                                make_cityscapes_split, model_inputs)
from mrcnn_plugin.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from mrcnn_plugin.data.datasets.cityscapes import (CITYSCAPES_THING_CLASSES, CITYSCAPES_THING_LABEL_IDS,
                                                   load_cityscapes_instances, register_cityscapes_instances)
from mrcnn_plugin.evaluation import CityscapesInstanceEvaluator
from mrcnn_plugin.structures import polygons_to_bitmask

REPO_ROOT = Path(__file__).resolve().parents[2]
EVALUATED = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """The generated split: (root, image_dir, gt_dir, images)."""
    root = tmp_path_factory.mktemp("cityscapes")
    images = make_cityscapes_split(root, "val")
    return root, str(root / "leftImg8bit" / "val"), str(root / "gtFine" / "val"), images


@pytest.fixture(scope="module")
def registered(split):
    """The split registered under a fresh name (removed afterwards)."""
    _, image_dir, gt_dir, _ = split
    name = f"cityscapes_fixture_{uuid.uuid4().hex[:8]}"
    register_cityscapes_instances(name, image_dir, gt_dir)
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _visible_masks(item):
    """{instance id: bool mask} of the evaluated things (groups included) in the instanceIds png."""
    ids = np.asarray(Image.open(item.instance_ids_file)).astype(np.int64)
    return {v: ids == v for v in np.unique(ids).tolist()
            if (v // 1000 if v >= 1000 else v) in CITYSCAPES_THING_LABEL_IDS}


def test_fixture_agrees_with_cityscapesscripts(split):
    """The generated files are consistent in the official sense: cityscapesscripts' own
    json -> instance image conversion reproduces the instanceIds png pixel for pixel, and labelIds
    is the label part of every instance id."""
    _, _, _, images = split
    for item in images:
        annotation = Annotation()
        annotation.fromJsonFile(item.json_file)
        official = np.asarray(createInstanceImage(annotation, "ids"), dtype=np.int64)
        written = np.asarray(Image.open(item.instance_ids_file)).astype(np.int64)
        np.testing.assert_array_equal(official, written)
        labels = np.asarray(Image.open(item.label_ids_file)).astype(np.int64)
        np.testing.assert_array_equal(labels, np.where(written >= 1000, written // 1000, written))
        assert Image.open(item.image_file).size == (WIDTH, HEIGHT)


@pytest.mark.parametrize("from_json", [True, False], ids=["polygons_json", "instanceIds_png"])
def test_loader_finds_the_drawn_instances(split, from_json):
    """From the json and from the png alike, every image has exactly the drawn evaluated
    objects: the right classes (caravan, road, building and the license plate left out), the car
    group as the only crowd annotation, boxes equal to the drawn geometry (the bus cut where the
    car in front of it starts), and masks (polygons from json, RLE from png) that rasterise to the
    visible pixels of the instanceIds png exactly, the hole a person leaves in a truck included."""
    _, image_dir, gt_dir, images = split
    records = load_cityscapes_instances(image_dir, gt_dir, from_json=from_json)
    assert [r["file_name"] for r in records] == [item.image_file for item in images]
    for record, item in zip(records, images):
        assert (record["height"], record["width"]) == (HEIGHT, WIDTH)
        assert record["image_id"] == Path(item.image_file).name
        annos = record["annotations"]
        got = Counter((CITYSCAPES_THING_CLASSES[a["category_id"]], a["iscrowd"], tuple(a["bbox"]))
                      for a in annos)
        want = Counter((e.name, e.iscrowd, tuple(float(v) for v in e.box)) for e in item.expected)
        assert got == want, item.key
        assert all(a["bbox_mode"] == 0 for a in annos)  # BoxMode.XYXY_ABS

        # Each annotation's mask is the visible region of one instance id, and all are found.
        visible = list(_visible_masks(item).values())
        for anno in annos:
            segm = anno["segmentation"]
            if from_json:
                assert isinstance(segm, list) and all(len(p) >= 6 and len(p) % 2 == 0 for p in segm)
                mask = polygons_to_bitmask([np.asarray(p, dtype=np.float64) for p in segm], HEIGHT, WIDTH)
            else:
                assert isinstance(segm, dict) and segm["size"] == [HEIGHT, WIDTH]
                mask = mask_util.decode(segm).astype(bool)
            assert sum(np.array_equal(mask, v) for v in visible) == 1, (item.key, anno["bbox"])
        assert len(annos) == len(visible)

    # The split's totals: 3 images, 19 objects (1 crowd) of all 8 classes.
    total = Counter(CITYSCAPES_THING_CLASSES[a["category_id"]] for r in records for a in r["annotations"])
    assert sum(total.values()) == 19 and set(total) == set(EVALUATED)
    assert total["car"] == 4 and total["person"] == 5 and total["truck"] == 2


def test_loader_errors_name_the_file(split, tmp_path):
    """An image without its ground-truth file, and a polygons json with a label cityscapesscripts
    does not know, are errors naming the file concerned."""
    _, _, _, images = split
    item = images[0]
    image_dir, gt_dir = tmp_path / "leftImg8bit", tmp_path / "gtFine"
    (image_dir / item.city).mkdir(parents=True)
    (gt_dir / item.city).mkdir(parents=True)
    (image_dir / item.city / Path(item.image_file).name).write_bytes(Path(item.image_file).read_bytes())
    with pytest.raises(FileNotFoundError, match=f"{item.key}_gtFine_polygons.json"):
        load_cityscapes_instances(str(image_dir), str(gt_dir))
    with pytest.raises(FileNotFoundError, match=f"{item.key}_gtFine_instanceIds.png"):
        load_cityscapes_instances(str(image_dir), str(gt_dir), from_json=False)

    bad = json.loads(Path(item.json_file).read_text())
    bad["objects"][1]["label"] = "spaceship"
    bad_json = gt_dir / item.city / Path(item.json_file).name
    bad_json.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=f"{item.key}_gtFine_polygons.json.*spaceship"):
        load_cityscapes_instances(str(image_dir), str(gt_dir))


def test_builtin_names_and_registration(split, registered, tmp_path, monkeypatch):
    """cityscapes_fine_instance_seg_{train,val,test} are registered at import although
    datasets/cityscapes does not exist, with the Cityscapes metadata (class names in
    cityscapesscripts' order, contiguous id -> label id, evaluator type, gt_dir under
    $DETECTRON2_DATASETS); loading one then fails naming the missing folder. A split registered with
    register_cityscapes_instances loads through DatasetCatalog."""
    assert list(CITYSCAPES_THING_CLASSES) == EVALUATED
    assert list(CITYSCAPES_THING_LABEL_IDS) == [24, 25, 26, 27, 28, 31, 32, 33]
    from mrcnn_plugin.data.datasets.builtin import datasets_root

    for split_name in ("train", "val", "test"):
        name = f"cityscapes_fine_instance_seg_{split_name}"
        assert name in DatasetCatalog
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == EVALUATED and meta.evaluator_type == "cityscapes_instance"
        assert meta.thing_contiguous_id_to_label_id == dict(enumerate(CITYSCAPES_THING_LABEL_IDS))
        assert meta.thing_dataset_id_to_contiguous_id == {v: k for k, v in enumerate(CITYSCAPES_THING_LABEL_IDS)}
        assert meta.gt_dir == os.path.join(datasets_root(), "cityscapes", "gtFine", split_name)
        assert meta.image_dir == os.path.join(datasets_root(), "cityscapes", "leftImg8bit", split_name)

    monkeypatch.chdir(tmp_path)  # a directory without datasets/cityscapes
    with pytest.raises(FileNotFoundError, match="leftImg8bit"):
        DatasetCatalog.get("cityscapes_fine_instance_seg_val")

    records = DatasetCatalog.get(registered)
    assert len(records) == 3 and sum(len(r["annotations"]) for r in records) == 19
    assert MetadataCatalog.get(registered).gt_dir == split[2]


def _tiny_cfg(dataset_name: str):
    from mrcnn_plugin.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(str(REPO_ROOT / "configs" / "COCO-InstanceSegmentation" / "mask_rcnn_R_50_FPN_1x.yaml"))
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", "18",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.NORM", "BN", "MODEL.FPN.OUT_CHANNELS", "32",
        "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
        "MODEL.ROI_HEADS.NUM_CLASSES", "8", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "128",
        "DATASETS.TRAIN", f"('{dataset_name}',)", "DATASETS.TEST", "()",
        "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SEED", "3"])
    return cfg


def test_train_one_step_on_cityscapes_records(registered):
    """The registered split feeds the standard train loader (DatasetMapper, polygon masks) and a
    tiny 8-class Mask R-CNN: one SGD step gives finite RPN, box and mask losses, with the crowd
    region left out of the ground truth."""
    from mrcnn_plugin.modeling import build_model

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = _tiny_cfg(registered)
        batch = next(iter(build_detection_train_loader(cfg)))
        assert len(batch) == 2
        counts = {Path(r["file_name"]).name: sum(1 for a in r["annotations"] if not a["iscrowd"])
                  for r in DatasetCatalog.get(registered)}
        for inp in batch:
            assert tuple(inp["image"].shape) == (3, HEIGHT, WIDTH)
            assert len(inp["instances"]) == counts[Path(inp["file_name"]).name]
            assert inp["instances"].gt_classes.max() < 8
        model = build_model(cfg)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
        losses = model(batch)
        assert {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"} <= set(losses)
        total = sum(losses.values())
        assert all(math.isfinite(v.item()) for v in losses.values()), losses
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        assert all(torch.isfinite(p).all() for p in model.parameters())
    finally:
        torch.set_num_threads(threads)


def _evaluate(evaluator, images, keep=None):
    evaluator.reset()
    for item in images:
        evaluator.process([model_inputs(item)], [{"instances": ground_truth_predictions(item, keep)}])
    return evaluator.evaluate()


def test_evaluator_ground_truth_scores_100(split, registered, tmp_path, monkeypatch):
    """The instanceIds ground truth fed back as predictions (score 1.0) scores AP = AP50 = 100 with
    cityscapesscripts' evaluation, through a registered dataset's metadata and through an explicit
    gt_dir alike; dropping every other prediction lowers both. Predictions are kept in
    cityscapesscripts' format under output_dir; nothing is written to the working directory and
    neither cityscapesscripts' global settings nor numpy are left changed."""
    import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as cs_eval

    settings_before = dict(vars(cs_eval.args))
    numpy_had_in1d = hasattr(np, "in1d")
    _, _, gt_dir, images = split
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)

    out = tmp_path / "out"
    result = _evaluate(CityscapesInstanceEvaluator(registered, output_dir=str(out)), images)
    assert result == {"segm": {"AP": pytest.approx(100.0), "AP50": pytest.approx(100.0)}}

    kept = out / "cityscapes_instances"
    lines = (kept / f"{images[0].key}_pred.txt").read_text().splitlines()
    assert len(lines) == 4  # person, two cars, bicycle; not the car group
    mask_file, label_id, score = lines[0].split(" ")
    assert int(label_id) in CITYSCAPES_THING_LABEL_IDS and float(score) == 1.0
    mask = np.asarray(Image.open(kept / mask_file))
    assert mask.shape == (HEIGHT, WIDTH) and set(np.unique(mask).tolist()) == {0, 255}
    assert os.listdir(workdir) == []

    explicit = CityscapesInstanceEvaluator(gt_dir=gt_dir, thing_label_ids=CITYSCAPES_THING_LABEL_IDS)
    assert _evaluate(explicit, images)["segm"] == pytest.approx({"AP": 100.0, "AP50": 100.0})
    halved = _evaluate(explicit, images, keep=lambda k: k % 2 == 0)["segm"]
    assert 0.0 < halved["AP"] < 100.0 and 0.0 < halved["AP50"] < 100.0
    assert os.listdir(workdir) == []
    assert vars(cs_eval.args).keys() == settings_before.keys()
    assert all(vars(cs_eval.args)[k] is v for k, v in settings_before.items())
    assert hasattr(np, "in1d") == numpy_had_in1d


def test_evaluator_errors_name_the_problem(split):
    """An image of the split never processed, masks of the wrong size, outputs without masks and
    a class outside the evaluated ones are each a clear error rather than a wrong number."""
    _, _, gt_dir, images = split
    evaluator = CityscapesInstanceEvaluator(gt_dir=gt_dir)
    with pytest.raises(ValueError, match="have no predictions"):
        _evaluate(evaluator, images[:2])

    small = dict(model_inputs(images[0]), height=HEIGHT // 2, width=WIDTH // 2)
    with pytest.raises(ValueError, match="original image size"):
        evaluator.process([small], [{"instances": ground_truth_predictions(images[0])}])

    no_masks = ground_truth_predictions(images[0])
    no_masks.remove("pred_masks")
    with pytest.raises(ValueError, match="pred_masks"):
        evaluator.process([model_inputs(images[0])], [{"instances": no_masks}])

    with pytest.raises(ValueError, match="not classes"):
        CityscapesInstanceEvaluator(gt_dir=gt_dir, thing_label_ids=[24, 29])  # 29: caravan


def test_evaluator_gathers_across_processes(split, tmp_path):
    """With two gloo processes each processing part of the split (one image twice, as a padded
    sampler does), rank 0 scores the union (AP 100) and rank 1 returns {}."""
    from mrcnn_plugin.engine import launch

    _, _, gt_dir, images = split
    launch(distributed_evaluation_worker, 2, args=(gt_dir, images, str(tmp_path)))
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert (rank0["processed"], rank1["processed"]) == (2, 2)
    assert rank0["result"]["segm"] == pytest.approx({"AP": 100.0, "AP50": 100.0})
    assert rank1["result"] == {}
