"""Tests of the samplers and the training / inference loaders."""
import itertools
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrcnn_plugin.config import get_cfg
from mrcnn_plugin.data import (BoxMode, DatasetMapper, InferenceSampler, TrainingSampler,
                               build_detection_test_loader, build_detection_train_loader)
from mrcnn_plugin.data.samplers import RepeatFactorTrainingSampler, repeat_factors_from_category_frequency


def _tiny_dataset(root: Path, n_landscape: int, n_portrait: int) -> list:
    """Records of small solid-colour images (landscape 24x40, portrait 40x24, h x w), one box each."""
    records = []
    for i in range(n_landscape + n_portrait):
        h, w = (24, 40) if i < n_landscape else (40, 24)
        path = root / f"img{i}.png"
        Image.fromarray(np.full((h, w, 3), i * 10, np.uint8)).save(path)
        records.append({"file_name": str(path), "height": h, "width": w, "image_id": i,
                        "annotations": [{"bbox": [2.0, 3.0, 10.0, 12.0], "bbox_mode": BoxMode.XYWH_ABS,
                                         "category_id": i % 3, "iscrowd": 0}]})
    return records


def _cfg(batch: int, workers: int = 0, grouping: bool = True):
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (24,)
    cfg.SOLVER.IMS_PER_BATCH = batch
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = grouping
    cfg.SEED = 7
    return cfg


# ----------------------------------------------------------------------------- samplers


def test_inference_sampler_covers_each_index_once_across_ranks():
    """Two simulated ranks get contiguous shards (sizes differ by at most one) covering 0..n-1 once."""
    for n in (0, 1, 7, 10):
        shards = [list(InferenceSampler(n, rank=r, world_size=2)) for r in range(2)]
        assert sorted(shards[0] + shards[1]) == list(range(n))
        assert abs(len(shards[0]) - len(shards[1])) <= 1
    assert list(InferenceSampler(7, rank=0, world_size=2)) == [0, 1, 2, 3]
    assert list(InferenceSampler(7, rank=1, world_size=2)) == [4, 5, 6]
    assert list(InferenceSampler(5)) == [0, 1, 2, 3, 4]   # no torch.distributed: one rank


def test_training_sampler_seeded_infinite_and_sharded():
    """Same seed, same stream; it never ends; 2 ranks together see each index once per epoch."""
    a = list(itertools.islice(TrainingSampler(10, seed=3), 35))
    b = list(itertools.islice(TrainingSampler(10, seed=3), 35))
    assert a == b and len(a) == 35
    assert sorted(a[:10]) == list(range(10)) and sorted(a[10:20]) == list(range(10))
    r0 = list(itertools.islice(TrainingSampler(10, seed=3, rank=0, world_size=2), 5))
    r1 = list(itertools.islice(TrainingSampler(10, seed=3, rank=1, world_size=2), 5))
    assert sorted(r0 + r1) == list(range(10))
    assert list(itertools.islice(TrainingSampler(4, shuffle=False, seed=0), 6)) == [0, 1, 2, 3, 0, 1]


def test_repeat_factor_sampler():
    """Category in 1 of 4 images, threshold 0.5: factor sqrt(0.5 / 0.25) = 1.414, and the sampler repeats
    that image 1.414 times as often as the others on average."""
    records = [{"annotations": [{"category_id": 0}]}] * 3 + [{"annotations": [{"category_id": 1}]}]
    factors = repeat_factors_from_category_frequency(records, 0.5, sqrt=True)
    # category 0: fraction 0.75 -> max(1, sqrt(0.5 / 0.75)) = 1
    np.testing.assert_allclose(factors.numpy(), [1, 1, 1, np.sqrt(2)], rtol=1e-6)
    stream = list(itertools.islice(RepeatFactorTrainingSampler(factors, seed=0), 4000))
    assert stream.count(3) / stream.count(0) == pytest.approx(np.sqrt(2), rel=0.05)


# ----------------------------------------------------------------------------- train loader


def test_train_loader_batches_from_catalog():
    """From DATASETS.TRAIN (coco-mini): batches of IMS_PER_BATCH model inputs with instances, endlessly."""
    cfg = _cfg(batch=3)
    cfg.DATASETS.TRAIN = ("coco_mini_val",)
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    loader = build_detection_train_loader(cfg)
    batches = list(itertools.islice(iter(loader), 4))
    assert [len(b) for b in batches] == [3, 3, 3, 3]
    for item in itertools.chain.from_iterable(batches):
        assert item["image"].shape[0] == 3 and min(item["image"].shape[1:]) == 64
        assert len(item["instances"]) > 0


def test_aspect_ratio_grouping_same_orientation(tmp_path):
    """With grouping, every batch holds only landscape or only portrait images; both kinds appear."""
    records = _tiny_dataset(tmp_path, 5, 5)
    loader = build_detection_train_loader(_cfg(batch=3), dataset=records)
    kinds = set()
    for batch in itertools.islice(iter(loader), 12):
        assert len(batch) == 3
        orientations = {item["image"].shape[2] > item["image"].shape[1] for item in batch}
        assert len(orientations) == 1
        kinds |= orientations
    assert kinds == {True, False}


def test_missing_image_skipped_and_counted(tmp_path, caplog):
    """A record whose file is missing is skipped and counted with a warning naming it; batches stay full."""
    records = _tiny_dataset(tmp_path, 4, 0)
    records.append(dict(records[0], file_name=str(tmp_path / "vanished.png"), image_id=99))
    loader = build_detection_train_loader(_cfg(batch=2, grouping=False), dataset=records)
    with caplog.at_level(logging.WARNING, logger="mrcnn_plugin.data"):
        batches = list(itertools.islice(iter(loader), 10))   # 20 images: 4 epochs of 5 records
    assert all(len(b) == 2 for b in batches)
    assert all(item["image_id"] != 99 for b in batches for item in b)
    assert loader.num_skipped >= 4
    assert "vanished.png" in caplog.text


class _PidMapper:
    """A mapper that records which process mapped each record."""

    def __init__(self, cfg):
        self._mapper = DatasetMapper(cfg, True)

    def __call__(self, record):
        out = self._mapper(record)
        out["pid"] = os.getpid()
        return out


def test_worker_processes_keep_sampler_order(tmp_path):
    """With 2 worker processes the records are mapped outside the main process, in the same order as with none."""
    records = _tiny_dataset(tmp_path, 6, 0)
    orders = {}
    for workers in (0, 2):
        cfg = _cfg(batch=2, workers=workers, grouping=False)
        batches = list(itertools.islice(iter(build_detection_train_loader(cfg, _PidMapper(cfg), dataset=records)), 6))
        orders[workers] = [item["image_id"] for b in batches for item in b]
        pids = {item["pid"] for b in batches for item in b}
        if workers == 0:
            assert pids == {os.getpid()}
        else:
            assert len(pids) == 2 and os.getpid() not in pids
    assert orders[0] == orders[2]
    assert sorted(orders[0][:6]) == list(range(6))


# ----------------------------------------------------------------------------- test loader


def test_test_loader_batch_size_one():
    """The inference loader yields [one mapped record] per step, each coco-mini val image once."""
    cfg = _cfg(batch=2)
    cfg.INPUT.MIN_SIZE_TEST = 64
    loader = build_detection_test_loader(cfg, "coco_mini_val")
    assert len(loader) == 79   # images in coco-mini's instances_val2017.json
    first = next(iter(loader))
    assert len(first) == 1 and "instances" not in first[0] and min(first[0]["image"].shape[1:]) == 64
