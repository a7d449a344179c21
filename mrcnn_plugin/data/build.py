"""Data loaders: dataset names -> records -> mapped model inputs -> batches.

Training: an endless stream of batches (lists of mapper outputs) of
SOLVER.IMS_PER_BATCH // world_size images, from a seeded TrainingSampler,
mapped in DATALOADER.NUM_WORKERS worker processes, optionally grouped so a
batch holds only landscape or only portrait images (less padding).
Inference: one image per batch, each image of the dataset exactly once
across ranks (InferenceSampler).
"""
import itertools
import logging
import pickle
import random
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from .catalog import DatasetCatalog
from .dataset_mapper import DatasetMapper
from .samplers import (InferenceSampler, RepeatFactorTrainingSampler, TrainingSampler, get_rank_and_world_size,
                       repeat_factors_from_category_frequency)

__all__ = ["get_detection_dataset_dicts", "build_detection_train_loader", "build_detection_test_loader",
           "TrainLoader", "filter_images_with_only_crowd_annotations", "filter_images_with_few_keypoints"]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- records


def filter_images_with_only_crowd_annotations(records: List[dict]) -> List[dict]:
    """Keeps images with at least one non-crowd annotation (nothing else can be trained on)."""
    kept = [r for r in records if any(a.get("iscrowd", 0) == 0 for a in r.get("annotations", []))]
    logger.info("Removed %d images with no usable annotations. %d images left.", len(records) - len(kept),
                len(kept))
    return kept


def _visible_keypoints(record: dict) -> int:
    return int(sum((np.asarray(a["keypoints"][2::3]) > 0).sum()
                   for a in record.get("annotations", []) if "keypoints" in a))


def filter_images_with_few_keypoints(records: List[dict], min_keypoints: int) -> List[dict]:
    """Keeps images whose annotations have at least `min_keypoints` labelled keypoints in total."""
    kept = [r for r in records if _visible_keypoints(r) >= min_keypoints]
    logger.info("Removed %d images with fewer than %d keypoints. %d images left.", len(records) - len(kept),
                min_keypoints, len(kept))
    return kept


def get_detection_dataset_dicts(names: Union[str, Sequence[str]], filter_empty: bool = True,
                                min_keypoints: int = 0) -> List[dict]:
    """Records of the registered datasets `names`, concatenated.

    filter_empty: drop images without a non-crowd annotation (for training);
    min_keypoints > 0: drop images with fewer labelled keypoints. Both only
    apply to datasets that have annotations. Raises ValueError for an empty
    dataset or when nothing is left.
    """
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise ValueError("No dataset names given (DATASETS.TRAIN / DATASETS.TEST is empty)")
    per_dataset = [DatasetCatalog.get(n) for n in names]
    for n, records in zip(names, per_dataset):
        if len(records) == 0:
            raise ValueError(f"Dataset {n!r} has no images")
    records = list(itertools.chain.from_iterable(per_dataset))
    has_annotations = "annotations" in records[0]
    if filter_empty and has_annotations:
        records = filter_images_with_only_crowd_annotations(records)
    if min_keypoints > 0 and has_annotations:
        records = filter_images_with_few_keypoints(records, min_keypoints)
    if not records:
        raise ValueError(f"No usable images left in {', '.join(names)} after filtering")
    return records


class _SerializedList(Dataset):
    """A list of records kept as one pickled byte buffer.

    Forked workers touching millions of small Python objects would copy them
    page by page (reference counts are writes); one numpy buffer is shared.
    """

    def __init__(self, items: Sequence[Any]):
        blobs = [pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL) for x in items]
        self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        self._data = np.frombuffer(b"".join(blobs), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, idx: int) -> Any:
        start = 0 if idx == 0 else int(self._ends[idx - 1])
        return pickle.loads(self._data[start:int(self._ends[idx])].tobytes())


# ----------------------------------------------------------------------------- training


class _Skipped:
    """Stands in the stream for a record the mapper returned None for, so the main process counts it."""

    def __init__(self, file_name: Optional[str], reason: Optional[str]):
        self.file_name = file_name
        self.reason = reason


class _MappedTrainStream(IterableDataset):
    """Sampler indices -> mapper(record), sharded over data-loader workers.

    Every worker runs the same seeded sampler and maps every num_workers-th
    index, so the main process receives the items in sampler order.
    """

    def __init__(self, records: Dataset, sampler: Sampler, mapper: Callable[[dict], Optional[dict]]):
        self._records = records
        self._sampler = sampler
        self._mapper = mapper

    def __iter__(self) -> Iterator[Any]:
        indices: Iterator[int] = iter(self._sampler)
        info = get_worker_info()
        if info is not None and info.num_workers > 1:
            indices = itertools.islice(indices, info.id, None, info.num_workers)
        for idx in indices:
            record = self._records[idx]
            out = self._mapper(record)
            if out is None:
                yield _Skipped(record.get("file_name"), getattr(self._mapper, "last_error", None))
            else:
                yield out


def _identity(x: Any) -> Any:
    return x


def _trivial_batch_collator(batch: List[Any]) -> List[Any]:
    return batch


def _worker_init_reset_seed(worker_id: int) -> None:
    """Seeds numpy and random in a worker from torch's per-worker seed (base seed + worker id).

    Without this, forked workers inherit the same numpy state and draw the
    same augmentations.
    """
    seed = torch.initial_seed() % 2 ** 31
    np.random.seed(seed)
    random.seed(seed)


class TrainLoader:
    """Endless iterator of training batches (list of `batch_size` mapper outputs).

    Records the mapper returned None for are skipped; `num_skipped` counts
    them and a warning reports the count at most every `warn_period_s` seconds.
    """

    def __init__(self, data_loader: DataLoader, batch_size: int, aspect_ratio_grouping: bool,
                 warn_period_s: float = 60.0):
        self.data_loader = data_loader
        self.batch_size = batch_size
        self.aspect_ratio_grouping = aspect_ratio_grouping
        self.warn_period_s = warn_period_s
        self.num_skipped = 0
        self._last_warning = -float("inf")

    def _note_skip(self, skipped: _Skipped) -> None:
        self.num_skipped += 1
        now = time.monotonic()
        if now - self._last_warning >= self.warn_period_s:
            self._last_warning = now
            logger.warning("Skipped %d training images so far that could not be read; latest: %s (%s)",
                           self.num_skipped, skipped.file_name, skipped.reason)

    @staticmethod
    def _bucket(item: Dict[str, Any]) -> int:
        # The augmented image decides the padding, so its shape, not the record's size, picks the bucket.
        h, w = item["image"].shape[-2:]
        return 0 if w > h else 1

    def __iter__(self) -> Iterator[List[Dict[str, Any]]]:
        buckets: List[List[Dict[str, Any]]] = [[], []]
        for item in self.data_loader:
            if isinstance(item, _Skipped):
                self._note_skip(item)
                continue
            bucket = buckets[self._bucket(item) if self.aspect_ratio_grouping else 0]
            bucket.append(item)
            if len(bucket) == self.batch_size:
                batch = bucket[:]
                del bucket[:]
                yield batch


def _build_train_sampler(cfg, records: List[dict]) -> Sampler:
    seed = cfg.SEED if cfg.SEED >= 0 else None
    name = cfg.DATALOADER.SAMPLER_TRAIN
    if name == "TrainingSampler":
        return TrainingSampler(len(records), seed=seed)
    if name == "RepeatFactorTrainingSampler":
        factors = repeat_factors_from_category_frequency(records, cfg.DATALOADER.REPEAT_THRESHOLD,
                                                         sqrt=cfg.DATALOADER.REPEAT_SQRT)
        return RepeatFactorTrainingSampler(factors, seed=seed)
    raise ValueError(f"DATALOADER.SAMPLER_TRAIN must be 'TrainingSampler' or 'RepeatFactorTrainingSampler', "
                     f"got {name!r}")


def build_detection_train_loader(cfg, mapper: Optional[Callable[[dict], Optional[dict]]] = None, *,
                                 dataset: Optional[List[dict]] = None,
                                 sampler: Optional[Sampler] = None) -> TrainLoader:
    """Endless iterator of batches of cfg.SOLVER.IMS_PER_BATCH // world_size mapped records.

    dataset: records to use instead of cfg.DATASETS.TRAIN; mapper: default
    DatasetMapper(cfg, True); sampler: default from DATALOADER.SAMPLER_TRAIN,
    seeded with cfg.SEED when it is >= 0.
    """
    if dataset is None:
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0)
    if mapper is None:
        mapper = DatasetMapper(cfg, True)
    if sampler is None:
        sampler = _build_train_sampler(cfg, dataset)
    _, world_size = get_rank_and_world_size()
    total = cfg.SOLVER.IMS_PER_BATCH
    if total <= 0 or total % world_size != 0:
        raise ValueError(f"SOLVER.IMS_PER_BATCH ({total}) must be a positive multiple of the number of "
                         f"processes ({world_size})")
    stream = _MappedTrainStream(_SerializedList(dataset), sampler, mapper)
    num_workers = cfg.DATALOADER.NUM_WORKERS
    data_loader = DataLoader(stream, batch_size=None, num_workers=num_workers, collate_fn=_identity,
                             worker_init_fn=_worker_init_reset_seed if num_workers > 0 else None)
    return TrainLoader(data_loader, total // world_size, cfg.DATALOADER.ASPECT_RATIO_GROUPING)


# ----------------------------------------------------------------------------- inference


class _MappedList(Dataset):
    """records[i] -> mapper(records[i])."""

    def __init__(self, records: Dataset, mapper: Callable[[dict], Any]):
        self._records = records
        self._mapper = mapper

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, idx: int) -> Any:
        return self._mapper(self._records[idx])


def build_detection_test_loader(cfg, dataset_name: Union[str, Sequence[str]],
                                mapper: Optional[Callable[[dict], Any]] = None) -> DataLoader:
    """DataLoader of batches [one mapped record] over this rank's InferenceSampler shard.

    Every image of the dataset is visited once across all ranks; mapper
    defaults to DatasetMapper(cfg, False).
    """
    records = get_detection_dataset_dicts(dataset_name, filter_empty=False)
    if mapper is None:
        mapper = DatasetMapper(cfg, False)
    num_workers = cfg.DATALOADER.NUM_WORKERS
    return DataLoader(_MappedList(_SerializedList(records), mapper), batch_size=1,
                      sampler=InferenceSampler(len(records)), num_workers=num_workers,
                      collate_fn=_trivial_batch_collator,
                      worker_init_fn=_worker_init_reset_seed if num_workers > 0 else None)
