"""Evaluator interface and the loop that runs a model over a dataset for evaluation.

An evaluator sees the model's inputs and outputs batch by batch (`process`) and
turns everything it has seen into metrics at the end (`evaluate`):

    evaluator = COCOEvaluator("annotations/instances_val2017.json")
    results = inference_on_dataset(model, data_loader, evaluator)
    # {"bbox": {"AP": 38.6, "AP50": ..., "AP-person": ...}, "segm": {...}}

With torch.distributed, every rank processes its share of the images and the
predictions are gathered to rank 0, which computes the metrics; other ranks get {}.
"""
import contextlib
import datetime
import itertools
import logging
import sys
import time
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

__all__ = [
    "DatasetEvaluator",
    "DatasetEvaluators",
    "inference_on_dataset",
    "gather_to_main_process",
    "is_main_process",
    "get_world_size",
]

logger = logging.getLogger(__name__)

# Results of one evaluator: {task name: {metric name: value}}, e.g. {"bbox": {"AP": 38.6}}.
Results = Dict[str, Dict[str, float]]


# ---------------------------------------------------------------- distributed helpers


def _distributed() -> bool:
    """True when torch.distributed runs with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_world_size() -> int:
    """Number of processes in the default group; 1 without torch.distributed."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0, and in a process that does not use torch.distributed."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def gather_to_main_process(items: Sequence[Any]) -> List[Any]:
    """Concatenates every rank's `items` (in rank order) on rank 0.

    Returns the concatenated list on rank 0 and [] on the other ranks; without
    torch.distributed (or with one process) returns `list(items)`. Items must be
    picklable. Every rank must call this (it is a collective).
    """
    if not _distributed():
        return list(items)
    # all_gather_object rather than gather_object: it is the one that every backend
    # (gloo, nccl) supports; ranks other than 0 simply drop what they received.
    gathered: List[Optional[List[Any]]] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(items))
    if dist.get_rank() != 0:
        return []
    return list(itertools.chain.from_iterable(part or [] for part in gathered))


# ---------------------------------------------------------------- evaluator interface


class DatasetEvaluator:
    """Base class: accumulates a model's predictions over a dataset, then computes metrics.

    Subclasses override the three methods. `inference_on_dataset` calls `reset()`
    once, `process()` once per batch and `evaluate()` once at the end.
    """

    def reset(self) -> None:
        """Forgets everything processed so far (called before a new evaluation run)."""

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        """Records one batch.

        inputs: the batch given to the model, one dict per image (with "image_id",
            "height", "width", ...).
        outputs: the model's result for that batch, one dict per image (detectron2
            format: {"instances": Instances with pred_boxes, scores, pred_classes, ...}).
        """

    def evaluate(self) -> Results:
        """Metrics over everything processed: {task: {metric: value}}.

        In a distributed run, returns the metrics on rank 0 and {} on the other ranks.
        """
        return {}


class DatasetEvaluators(DatasetEvaluator):
    """Several evaluators run together; their results are merged into one dict.

    Two evaluators that report the same task name are an error, since one would
    silently hide the other.
    """

    def __init__(self, evaluators: Iterable[DatasetEvaluator]):
        self._evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> Results:
        merged: Results = {}
        for evaluator in self._evaluators:
            # Every evaluator's evaluate() must run on every rank: it may gather.
            result = evaluator.evaluate() or {}
            for task, metrics in result.items():
                if task in merged:
                    raise ValueError(
                        f"Two evaluators report the task '{task}' "
                        f"({type(evaluator).__name__} is the second); task names must be unique")
                merged[task] = metrics
        return merged


# ---------------------------------------------------------------- inference loop


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Puts `model` in eval mode, without autograd, and restores its training flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _synchronize_cuda() -> None:
    """Waits for queued CUDA kernels, so that wall-clock times measure the work itself."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _dataset_length(data_loader: Iterable[Any]) -> Optional[int]:
    """Number of batches when the iterable knows it, else None (e.g. a generator)."""
    try:
        return len(data_loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def _format_seconds(seconds: float) -> str:
    """Seconds as H:MM:SS."""
    return str(datetime.timedelta(seconds=int(seconds)))


class _Timer:
    """Counts images and seconds (total and model-only), ignoring the warm-up batches.

    The first batches pay for lazy initialisation (cuDNN autotuning, allocator
    growth, first-touch of weights), so they are not representative of throughput.
    """

    def __init__(self, num_warmup: int):
        self.num_warmup = num_warmup
        self.batches = 0
        self.images = 0
        self.total_s = 0.0
        self.model_s = 0.0
        self._start = time.perf_counter()

    def add(self, num_images: int, model_s: float) -> None:
        """Records one finished batch of `num_images` whose forward pass took `model_s` seconds."""
        self.batches += 1
        if self.batches == self.num_warmup:
            # Restart the clock so that the warm-up batches count for nothing.
            self._start = time.perf_counter()
            return
        if self.batches > self.num_warmup:
            self.images += num_images
            self.model_s += model_s
            self.total_s = time.perf_counter() - self._start

    def per_image(self, seconds: float) -> float:
        """Seconds per image after warm-up (nan before any timed image)."""
        return seconds / self.images if self.images else float("nan")


def _log_progress(timer: _Timer, done: int, total: Optional[int]) -> None:
    """One plain progress line: batches done, time per image and, when known, an ETA."""
    per_batch = timer.total_s / max(timer.batches - timer.num_warmup, 1)
    eta = f", ETA {_format_seconds(per_batch * (total - done))}" if total is not None else ""
    logger.info("Inference done %d/%s batches, %.4f s/img%s", done, total if total is not None else "?",
                timer.per_image(timer.total_s), eta)


def inference_on_dataset(
    model: nn.Module,
    data_loader: Iterable[List[Dict[str, Any]]],
    evaluator: Union[DatasetEvaluator, Sequence[DatasetEvaluator], None],
    num_warmup: int = 5,
    log_period_s: float = 10.0,
) -> Results:
    """Runs `model` over every batch of `data_loader` and returns `evaluator`'s metrics.

    model: called as `model(inputs)` in eval mode under torch.no_grad (its training
        flag is restored afterwards); returns one output dict per input dict.
    data_loader: any iterable of batches, a batch being a list of input dicts. In a
        distributed run each rank iterates over its own share of the dataset.
    evaluator: one evaluator, several (merged with DatasetEvaluators), or None.
    num_warmup: batches left out of the timing (at most all batches but one).
    log_period_s: seconds between plain log lines when stderr is not a terminal
        (a tqdm bar is shown instead when it is).

    Returns {task: {metric: value}} on rank 0; {} on other ranks (and with no evaluator).
    """
    if evaluator is None:
        evaluator = DatasetEvaluators([])
    elif not isinstance(evaluator, DatasetEvaluator):
        evaluator = DatasetEvaluators(evaluator)
    total = _dataset_length(data_loader)
    num_warmup = min(num_warmup, total - 1) if total else num_warmup
    logger.info("Start inference on %s batches (%d processes)", total if total is not None else "?",
                get_world_size())

    evaluator.reset()
    timer = _Timer(max(num_warmup, 0))
    is_terminal = sys.stderr.isatty()
    last_log = time.perf_counter()
    with _eval_mode(model), tqdm(total=total, disable=not is_terminal, desc="inference",
                                 unit="batch") as bar:
        for done, inputs in enumerate(data_loader, start=1):
            start = time.perf_counter()
            outputs = model(inputs)
            _synchronize_cuda()
            timer.add(len(inputs), time.perf_counter() - start)
            evaluator.process(inputs, outputs)
            bar.update(1)
            if not is_terminal and time.perf_counter() - last_log >= log_period_s:
                _log_progress(timer, done, total)
                last_log = time.perf_counter()

    _log_timing(timer)
    results = evaluator.evaluate()
    # An evaluator may return None on ranks other than 0; callers expect a dict.
    return results if results is not None else {}


def _log_timing(timer: _Timer) -> None:
    """Logs total and per-image times, excluding the warm-up batches."""
    world = get_world_size()
    logger.info(
        "Total inference time: %s (%.6f s / img per process, on %d processes), %d images timed "
        "after %d warm-up batches", _format_seconds(timer.total_s), timer.per_image(timer.total_s),
        world, timer.images, timer.num_warmup)
    logger.info("Total inference model time: %s (%.6f s / img per process, on %d processes)",
                _format_seconds(timer.model_s), timer.per_image(timer.model_s), world)
