"""Tests of the dataset catalog, the COCO json loader and the built-in dataset names."""
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from mrcnn_plugin.data import (BoxMode, DatasetCatalog, MetadataCatalog, create_keypoint_hflip_indices,
                               get_detection_dataset_dicts, load_coco_json, register_coco_instances)
from mrcnn_plugin.data.datasets import builtin


@pytest.fixture(scope="module")
def coco_mini(shared_dir: Path) -> Path:
    return shared_dir / "data" / "coco-mini"


# ----------------------------------------------------------------------------- catalog


def test_catalog_register_get_list_remove(fresh_name):
    """register/get/list/remove work, get() calls the function, and a name cannot be registered twice."""
    calls = []
    DatasetCatalog.register(fresh_name, lambda: calls.append(1) or [{"file_name": "a.jpg"}])
    assert fresh_name in DatasetCatalog.list()
    assert DatasetCatalog.get(fresh_name) == [{"file_name": "a.jpg"}]
    assert calls == [1]
    with pytest.raises(KeyError, match="already registered"):
        DatasetCatalog.register(fresh_name, lambda: [])
    DatasetCatalog.remove(fresh_name)
    with pytest.raises(KeyError, match="not registered"):
        DatasetCatalog.get(fresh_name)


def test_metadata_fields_and_errors(fresh_name):
    """Metadata: set() and attribute access; a missing field's error names dataset and key;
    values are fixed once set."""
    meta = MetadataCatalog.get(fresh_name).set(thing_classes=["a", "b"], evaluator_type="coco")
    assert MetadataCatalog.get(fresh_name) is meta
    assert meta.thing_classes == ["a", "b"]
    with pytest.raises(AttributeError, match=rf"{fresh_name}.*keypoint_names|keypoint_names.*{fresh_name}"):
        _ = meta.keypoint_names
    meta.thing_classes = ("a", "b")  # same value (tuple vs list) is fine
    with pytest.raises(ValueError, match="thing_classes"):
        meta.thing_classes = ["a", "c"]
    assert meta.get("json_file", "none") == "none"


def test_builtin_names_registered():
    """Importing mrcnn_plugin.data registers the COCO 2017, keypoint and coco-mini names with metadata."""
    names = set(DatasetCatalog.list())
    for n in ("coco_2017_train", "coco_2017_val", "keypoints_coco_2017_train", "keypoints_coco_2017_val",
              "coco_mini_train", "coco_mini_val", "keypoints_coco_mini_train", "keypoints_coco_mini_val"):
        assert n in names
        assert MetadataCatalog.get(n).evaluator_type == "coco"
    meta = MetadataCatalog.get("coco_2017_train")
    assert meta.json_file.endswith("coco/annotations/instances_train2017.json")
    assert meta.image_root.endswith("coco/train2017")
    assert len(meta.thing_classes) == 80 and meta.thing_classes[0] == "person"
    assert MetadataCatalog.get("keypoints_coco_2017_val").json_file.endswith("person_keypoints_val2017.json")


def test_coco_mini_absent_fails_only_on_load(monkeypatch, tmp_path):
    """With MRCNN_COCO_MINI pointing nowhere, registration succeeds and loading raises
    FileNotFoundError naming the path."""
    missing = tmp_path / "no-coco-mini"
    monkeypatch.setenv("MRCNN_COCO_MINI", str(missing))
    assert builtin.coco_mini_root() == str(missing)
    saved = {n: DatasetCatalog._loaders.pop(n) for n in list(DatasetCatalog.list()) if "coco_mini" in n}
    saved_meta = {n: MetadataCatalog._metadata.pop(n) for n in saved if n in MetadataCatalog}
    try:
        builtin.register_all_builtin()
        with pytest.raises(FileNotFoundError, match=str(missing)):
            DatasetCatalog.get("coco_mini_val")
    finally:
        for n in saved:
            DatasetCatalog._loaders[n] = saved[n]
            MetadataCatalog._metadata[n] = saved_meta[n]


def test_missing_json_error_names_file(tmp_path):
    """load_coco_json on a missing json raises FileNotFoundError naming it."""
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        load_coco_json(str(tmp_path / "nothing.json"), str(tmp_path))


# ----------------------------------------------------------------------------- coco-mini


@pytest.mark.parametrize("name,split,kind", [("coco_mini_train", "train2017", "instances"),
                                             ("coco_mini_val", "val2017", "instances"),
                                             ("keypoints_coco_mini_train", "train2017", "person_keypoints")])
def test_coco_mini_counts_match_pycocotools(coco_mini, name, split, kind):
    """Records from the catalog: one per json image, one annotation per json annotation (coco-mini has no bad ones)."""
    api = COCO(str(coco_mini / "annotations" / f"{kind}_{split}.json"))
    records = DatasetCatalog.get(name)
    assert len(records) == len(api.getImgIds())
    assert sum(len(r["annotations"]) for r in records) == len(api.getAnnIds())
    by_id = {r["image_id"]: r for r in records}
    for img in api.loadImgs(api.getImgIds()):
        r = by_id[img["id"]]
        assert (r["height"], r["width"]) == (img["height"], img["width"])
        assert r["file_name"] == str(coco_mini / split / img["file_name"])
        assert len(r["annotations"]) == len(api.getAnnIds(imgIds=[img["id"]]))


def test_coco_mini_contiguous_ids_and_boxes(coco_mini):
    """category_id maps sorted COCO ids to 0..79 (e.g. 90 'toothbrush' -> 79); bbox stays XYWH as in the json."""
    api = COCO(str(coco_mini / "annotations" / "instances_val2017.json"))
    cat_ids = sorted(api.getCatIds())
    records = DatasetCatalog.get("coco_mini_val")
    meta = MetadataCatalog.get("coco_mini_val")
    assert meta.thing_dataset_id_to_contiguous_id[1] == 0
    assert meta.thing_dataset_id_to_contiguous_id[90] == 79
    assert meta.thing_classes[79] == "toothbrush"
    json_annos = {}
    for img_id in api.getImgIds():
        json_annos[img_id] = api.loadAnns(api.getAnnIds(imgIds=[img_id]))
    for r in records:
        for obj, ann in zip(r["annotations"], json_annos[r["image_id"]]):
            assert obj["category_id"] == cat_ids.index(ann["category_id"])
            assert 0 <= obj["category_id"] < 80
            assert obj["bbox_mode"] == BoxMode.XYWH_ABS
            assert obj["bbox"] == ann["bbox"]
            assert obj["iscrowd"] == ann["iscrowd"]


def test_coco_mini_keypoints_shifted_half_pixel(coco_mini):
    """Keypoints: labelled (v > 0) x and y are the json's integers + 0.5; unlabelled stay (0, 0, 0)."""
    api = COCO(str(coco_mini / "annotations" / "person_keypoints_train2017.json"))
    records = {r["image_id"]: r for r in DatasetCatalog.get("keypoints_coco_mini_train")}
    checked_labelled = checked_unlabelled = 0
    for img_id, record in records.items():
        for obj, ann in zip(record["annotations"], api.loadAnns(api.getAnnIds(imgIds=[img_id]))):
            kp_json = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
            kp = np.asarray(obj["keypoints"], dtype=np.float64).reshape(-1, 3)
            labelled = kp_json[:, 2] > 0
            np.testing.assert_allclose(kp[labelled, :2], kp_json[labelled, :2] + 0.5)
            np.testing.assert_array_equal(kp[~labelled], 0)
            np.testing.assert_array_equal(kp[:, 2], kp_json[:, 2])
            checked_labelled += labelled.sum()
            checked_unlabelled += (~labelled).sum()
    assert checked_labelled > 0 and checked_unlabelled > 0
    meta = MetadataCatalog.get("keypoints_coco_mini_train")
    assert meta.keypoint_names == tuple(api.loadCats(1)[0]["keypoints"])
    assert ("left_eye", "right_eye") in meta.keypoint_flip_map


def test_keypoint_hflip_indices():
    """COCO's 17 keypoints flip to: nose stays, each left_* <-> right_* (indices 1<->2, 3<->4, ..., 15<->16)."""
    expected = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
    assert create_keypoint_hflip_indices("keypoints_coco_mini_train").tolist() == expected
    assert create_keypoint_hflip_indices(["keypoints_coco_2017_train", "keypoints_coco_mini_val"]).tolist() == expected
    with pytest.raises(AttributeError, match="coco_2017_val"):
        create_keypoint_hflip_indices("coco_2017_val")   # an instances set has no keypoints


def test_coco_mini_crowd_annotations(coco_mini):
    """Crowd annotations are kept by the loader (iscrowd 1, RLE); images with only crowd are filtered for training."""
    path = coco_mini / "annotations" / "instances_train2017.json"
    data = json.loads(path.read_text())
    crowd = [a for a in data["annotations"] if a["iscrowd"]]
    records = DatasetCatalog.get("coco_mini_train")
    loaded_crowd = [o for r in records for o in r["annotations"] if o["iscrowd"]]
    assert len(loaded_crowd) == len(crowd) > 0
    assert all(isinstance(o["segmentation"], dict) and "counts" in o["segmentation"] for o in loaded_crowd)
    # Images left for training = those with at least one non-crowd annotation, counted from the json.
    usable = {a["image_id"] for a in data["annotations"] if not a["iscrowd"]}
    assert len(get_detection_dataset_dicts(["coco_mini_train"], filter_empty=True)) == len(usable)


def test_min_keypoints_filter_matches_json(coco_mini):
    """min_keypoints drops images whose annotations have fewer labelled keypoints in total (counted from the json)."""
    data = json.loads((coco_mini / "annotations" / "person_keypoints_val2017.json").read_text())
    per_image = {img["id"]: 0 for img in data["images"]}
    has_usable = set()
    for a in data["annotations"]:
        per_image[a["image_id"]] += sum(1 for v in a["keypoints"][2::3] if v > 0)
        if not a["iscrowd"]:
            has_usable.add(a["image_id"])
    expected = sum(1 for i, n in per_image.items() if n >= 10 and i in has_usable)
    got = get_detection_dataset_dicts("keypoints_coco_mini_val", filter_empty=True, min_keypoints=10)
    assert len(got) == expected


# ----------------------------------------------------------------------------- bad annotations


def _write_bad_json(tmp_path: Path) -> Path:
    square = [10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 50},
                   {"id": 2, "file_name": "b.jpg", "height": 40, "width": 50}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}],
        "annotations": [
            {"id": 101, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [10, 10, 20, 20],
             "area": 400, "segmentation": [square]},
            {"id": 102, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [10, 10, 5, 5],
             "area": 10, "segmentation": [[10.0, 10.0, 15.0, 15.0]]},              # 2 points only
            {"id": 103, "image_id": 1, "category_id": 3, "iscrowd": 0, "bbox": [10, 10, 0, 5],
             "area": 0, "segmentation": [square]},                                  # zero width
            {"id": 104, "image_id": 2, "category_id": 7, "iscrowd": 0, "bbox": [10, 10, 20, 20],
             "area": 400, "segmentation": [square]},                                # unknown category
            {"id": 105, "image_id": 2, "category_id": 3, "iscrowd": 0, "bbox": [10, 10, 20, 20],
             "area": 400, "segmentation": [square, [1.0, 1.0, 2.0, 2.0]]},          # one bad polygon of two
            {"id": 106, "image_id": 2, "category_id": 3, "iscrowd": 1, "bbox": [0, 0, 2, 2],
             "area": 4, "segmentation": {"size": [40, 50], "counts": [0, 2, 38, 2, 1958]}},
            {"id": 107, "image_id": 2, "category_id": 1, "iscrowd": 0, "bbox": [5, 5, 4, -1],
             "area": 0, "segmentation": [square]},                                  # negative height
        ],
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


def test_bad_annotations_dropped_with_warning(tmp_path, caplog):
    """Polygons < 3 points, zero/negative boxes and unknown category ids are dropped;
    the warning names the file and the annotation ids."""
    path = _write_bad_json(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mrcnn_plugin.data"):
        records = load_coco_json(str(path), str(tmp_path))
    annos = {r["image_id"]: r["annotations"] for r in records}
    assert len(annos[1]) == 1 and annos[1][0]["category_id"] == 0
    # Image 2 keeps annotation 105 (its good polygon only, category 3 -> 1) and the crowd RLE 106.
    assert len(annos[2]) == 2
    kept = annos[2][0]
    assert kept["category_id"] == 1 and kept["segmentation"] == [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]]
    crowd = annos[2][1]
    assert crowd["iscrowd"] == 1 and isinstance(crowd["segmentation"]["counts"], (bytes, str))
    text = caplog.text
    assert str(path) in text
    assert "dropped 4 of 7" in text
    for ann_id in ("102", "103", "104", "107"):
        assert ann_id in text
    assert "105" in text  # its bad polygon was removed


def test_register_coco_instances_one_call(tmp_path, fresh_name):
    """register_coco_instances makes any COCO json loadable by name and sets its metadata."""
    path = _write_bad_json(tmp_path)
    register_coco_instances(fresh_name, {"note": "x"}, str(path), str(tmp_path))
    meta = MetadataCatalog.get(fresh_name)
    assert meta.json_file == str(path) and meta.evaluator_type == "coco" and meta.note == "x"
    records = DatasetCatalog.get(fresh_name)
    assert [r["file_name"] for r in records] == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    assert meta.thing_classes == ["cat", "dog"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 3: 1}
