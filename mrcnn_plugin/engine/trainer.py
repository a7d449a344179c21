"""`Trainer`: trains a model from a config, with checkpoints, evaluation and metrics (detectron2's
DefaultTrainer in spirit, as one readable class).

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()       # the last evaluation's results

One iteration: take a batch (SOLVER.IMS_PER_BATCH // world size images per process),
forward under autocast when SOLVER.AMP.ENABLED, check the losses are finite, backward
(through DDP when several processes), optimizer step (gradient clipping inside it),
lr scheduler step. Then, in this order:
- checkpoint every SOLVER.CHECKPOINT_PERIOD iterations (`model_{iter:07d}.pth`) and at
  the end (`model_final.pth`), `last_checkpoint` naming the newest;
- evaluation on DATASETS.TEST every TEST.EVAL_PERIOD iterations and at the end
  (COCOEvaluator; random generators are left as they were, so evaluating does not
  change the training that follows); at the end also with test-time augmentation
  when TEST.AUG.ENABLED (`test_with_TTA`, results "bbox_TTA", "segm_TTA");
- metrics every `log_period` iterations, at evaluations and at the end: one line in
  OUTPUT_DIR/metrics.json, TensorBoard scalars, a log line (or a tqdm bar when stderr is
  a terminal). At the end, OUTPUT_DIR/curves.png.

A loss that is NaN or infinite stops training with FloatingPointError before the
optimizer step and without writing a checkpoint, so the last checkpoint stays the last
good state.

Resuming (`resume_or_load(resume=True)`) restores weights, optimizer, scheduler, the
iteration, every process's random generators and its position in the training
sampler's stream (see checkpointing.py). With DATALOADER.NUM_WORKERS 0, no
aspect-ratio grouping (or one image per process), deterministic algorithms and the
same number of processes, the resumed run is bitwise the uninterrupted one on CPU.
With data-loader workers their random generators are re-seeded at the resume point
(deterministically, but differently from the uninterrupted run). With aspect-ratio
grouping the stream restarts after (iterations x batch + skipped) records, while some
of those may still have been waiting in the other orientation's bucket: near the
checkpoint an image can then be used twice or left out.
"""
import contextlib
import datetime
import itertools
import logging
import math
import os
import sys
import time
from collections import deque
from typing import Any, Deque, Dict, Iterator, List, Mapping, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from .checkpointing import capture_rng_state, load_newest_complete_checkpoint, make_checkpointer, restore_rng_state
from .launch import all_gather_objects, get_local_rank, get_rank, get_world_size, is_main_process
from .metrics import JSONLinesWriter, MetricsWindow, TensorBoardWriter, flatten_results
from .optimizer import build_lr_scheduler, build_optimizer
from .plots import plot_training_curves

__all__ = ["Trainer", "preserved_rng_state", "SkipFirstSampler", "DEFAULT_LOG_PERIOD", "PROGRESS_BAR_SHOWS_IT"]

logger = logging.getLogger(__name__)

# detectron2 writes metrics every 20 iterations.
DEFAULT_LOG_PERIOD = 20
# Attribute of the periodic log records, True when a tqdm bar on the terminal already shows their content.
PROGRESS_BAR_SHOWS_IT = "progress_bar_shows_it"


@contextlib.contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Runs the block and puts every random generator back where it was."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


class SkipFirstSampler(Sampler):
    """`sampler`'s index stream without its first `count` indices (a resumed run's position)."""

    def __init__(self, sampler: Sampler, count: int):
        self.sampler = sampler
        self.count = int(count)

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.count, None)


def _format_seconds(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


class Trainer:
    """Builds model, optimizer, lr scheduler and checkpointer from `cfg`; `train()` runs the loop.

    cfg: a config from mrcnn_plugin.config.get_cfg() (SOLVER.*, DATASETS.*, OUTPUT_DIR, SEED...).
        When SEED < 0 the run's seed is drawn here (the same on every process); callers
        that want it recorded set cfg.SEED before (train_cli does).
    log_period: iterations between metrics records / log lines (default DEFAULT_LOG_PERIOD, 20).

    The classmethods `build_model`, `build_optimizer`, `build_lr_scheduler`,
    `build_train_loader`, `build_test_loader` and `build_evaluator` are the places to
    override in a subclass.
    """

    def __init__(self, cfg, log_period: Optional[int] = None):
        self.cfg = cfg.clone()
        self.log_period = int(log_period or DEFAULT_LOG_PERIOD)
        self.seed = self._resolve_seed(self.cfg)
        model = self.build_model(self.cfg)
        model.train()
        self.optimizer = self.build_optimizer(self.cfg, model)
        self.scheduler = self.build_lr_scheduler(self.cfg, self.optimizer)
        self.model = self._wrap_distributed(model)
        self._device_type = torch.device(self.cfg.MODEL.DEVICE).type
        self.grad_scaler = self._build_grad_scaler()
        checkpointables: Dict[str, Any] = {"optimizer": self.optimizer, "scheduler": self.scheduler}
        if self.grad_scaler is not None:
            checkpointables["grad_scaler"] = self.grad_scaler
        self.checkpointer = make_checkpointer(model, self.cfg.OUTPUT_DIR, save_to_disk=is_main_process(),
                                              **checkpointables)
        self.start_iter = 0
        self.iter = 0
        self.max_iter = int(self.cfg.SOLVER.MAX_ITER)
        self.latest_eval_results: Dict[str, Any] = {}
        self.train_loader: Any = None
        self._resume_state: Optional[Dict[str, Any]] = None
        self._loader_start = 0
        self._pending_eval: Dict[str, float] = {}
        self._window = MetricsWindow()
        self._iteration_times: Deque[float] = deque(maxlen=self.log_period)
        self._writers: List[Any] = []
        self._bar: Any = None
        self._data_iter: Optional[Iterator[List[Dict[str, Any]]]] = None
        self._train_start = time.perf_counter()

    # ------------------------------------------------------------------ builders (override points)

    @classmethod
    def build_model(cls, cfg) -> nn.Module:
        """The model of MODEL.META_ARCHITECTURE on MODEL.DEVICE."""
        from ..modeling import build_model

        model = build_model(cfg)
        logger.info("Model:\n%s", model)
        return model

    @classmethod
    def build_optimizer(cls, cfg, model: nn.Module) -> torch.optim.Optimizer:
        """SGD per cfg.SOLVER (see optimizer.py)."""
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer: torch.optim.Optimizer):
        """The per-iteration schedule of SOLVER.LR_SCHEDULER_NAME (see optimizer.py)."""
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg, seed: int, start_position: int = 0):
        """Endless batches of DATASETS.TRAIN for this process, from position `start_position`
        of its sampler stream (the sampler is seeded with `seed`, the same on every process)."""
        from ..data import (RepeatFactorTrainingSampler, TrainingSampler, build_detection_train_loader,
                            get_detection_dataset_dicts)
        from ..data.samplers import repeat_factors_from_category_frequency

        records = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0)
        # The sampler is built here (not by the data package) so that it can start mid-stream.
        name = cfg.DATALOADER.SAMPLER_TRAIN
        if name == "TrainingSampler":
            sampler: Sampler = TrainingSampler(len(records), seed=seed)
        elif name == "RepeatFactorTrainingSampler":
            factors = repeat_factors_from_category_frequency(records, cfg.DATALOADER.REPEAT_THRESHOLD,
                                                             sqrt=cfg.DATALOADER.REPEAT_SQRT)
            sampler = RepeatFactorTrainingSampler(factors, seed=seed)
        else:
            raise ValueError(f"DATALOADER.SAMPLER_TRAIN must be 'TrainingSampler' or "
                             f"'RepeatFactorTrainingSampler', got {name!r}")
        if start_position:
            sampler = SkipFirstSampler(sampler, start_position)
        loader = build_detection_train_loader(cfg, dataset=records, sampler=sampler)
        data_loader = getattr(loader, "data_loader", None)
        if isinstance(data_loader, DataLoader):
            # A DataLoader draws its workers' base seed from torch's global generator when
            # iteration starts; its own generator keeps the training randomness (restored on
            # resume) independent of when the loader is (re)started.
            data_loader.generator = torch.Generator().manual_seed(
                (seed * 1_000_003 + get_rank() * 7_919 + start_position) % (2 ** 63))
        return loader

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        """Batches of one image of `dataset_name`, this process's share of them."""
        from ..data import build_detection_test_loader

        return build_detection_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_folder: Optional[str] = None):
        """The evaluator named by the dataset's metadata `evaluator_type`: "cityscapes_instance"
        (cityscapesscripts) or COCO (pycocotools; the metadata needs a json_file)."""
        from ..data import MetadataCatalog
        from ..evaluation import CityscapesInstanceEvaluator, COCOEvaluator

        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        if MetadataCatalog.get(dataset_name).get("evaluator_type", "coco") == "cityscapes_instance":
            return CityscapesInstanceEvaluator.from_dataset(dataset_name, cfg, output_dir=output_folder)
        return COCOEvaluator.from_dataset(dataset_name, cfg, output_dir=output_folder)

    @classmethod
    def test(cls, cfg, model: nn.Module) -> Dict[str, Any]:
        """Evaluates `model` on every dataset of DATASETS.TEST.

        Returns {task: {metric: value}} for one dataset, {dataset: {task: ...}} for
        several; {} on processes other than rank 0 and when DATASETS.TEST is empty.
        """
        from ..evaluation import format_ap_table, inference_on_dataset

        results: Dict[str, Any] = {}
        for name in cfg.DATASETS.TEST:
            evaluator = cls.build_evaluator(cfg, name)
            results[name] = inference_on_dataset(model, cls.build_test_loader(cfg, name), evaluator)
            if is_main_process() and results[name]:
                logger.info("Evaluation results on %s:\n%s", name, format_ap_table(results[name]))
        if not is_main_process():
            return {}
        if len(results) == 1:
            return next(iter(results.values()))
        return results

    @classmethod
    def test_with_TTA(cls, cfg, model: nn.Module) -> Dict[str, Any]:
        """Evaluates `model` with test-time augmentation (TEST.AUG.*; see
        modeling/test_time_augmentation.py) on every dataset of DATASETS.TEST.

        Images are read at their original resolution and resized once per augmentation.
        Results as `test`'s, with "_TTA" appended to the top-level keys ("bbox_TTA",
        "segm_TTA"; or the dataset names with several datasets); evaluator outputs go to
        OUTPUT_DIR/inference_TTA/<dataset>.
        """
        from ..data import DatasetMapper, build_detection_test_loader
        from ..evaluation import format_ap_table, inference_on_dataset
        from ..modeling.test_time_augmentation import GeneralizedRCNNWithTTA

        tta_model = GeneralizedRCNNWithTTA.from_config(cfg, model)
        original_size = DatasetMapper(cfg, False, augmentations=[])
        results: Dict[str, Any] = {}
        for name in cfg.DATASETS.TEST:
            evaluator = cls.build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name))
            loader = build_detection_test_loader(cfg, name, mapper=original_size)
            results[name] = inference_on_dataset(tta_model, loader, evaluator)
            if is_main_process() and results[name]:
                logger.info("Evaluation results on %s with test-time augmentation:\n%s", name,
                            format_ap_table(results[name]))
        if not is_main_process():
            return {}
        if len(results) == 1:
            results = next(iter(results.values()))
        return {f"{key}_TTA": value for key, value in results.items()}

    # ------------------------------------------------------------------ setup helpers

    @staticmethod
    def _resolve_seed(cfg) -> int:
        if cfg.SEED >= 0:
            return int(cfg.SEED)
        from ..data.samplers import shared_random_seed

        return shared_random_seed()

    def _wrap_distributed(self, model: nn.Module) -> nn.Module:
        if get_world_size() == 1:
            return model
        device_ids = [get_local_rank()] if torch.device(self.cfg.MODEL.DEVICE).type == "cuda" else None
        # broadcast_buffers=False as detectron2: buffers (BN statistics, anchors) are per process.
        return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)

    def _build_grad_scaler(self) -> Optional[torch.amp.GradScaler]:
        # fp16 needs loss scaling; CPU autocast uses bf16, whose range makes it unnecessary.
        if self.cfg.SOLVER.AMP.ENABLED and self._device_type == "cuda":
            return torch.amp.GradScaler("cuda")
        return None

    @property
    def unwrapped_model(self) -> nn.Module:
        """The model without its DistributedDataParallel wrapper."""
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    def _autocast(self):
        if not self.cfg.SOLVER.AMP.ENABLED:
            return contextlib.nullcontext()
        dtype = torch.float16 if self._device_type == "cuda" else torch.bfloat16
        return torch.autocast(device_type=self._device_type, dtype=dtype)

    # ------------------------------------------------------------------ resume / load

    def resume_or_load(self, resume: bool = True) -> None:
        """resume=True: continue from the newest complete checkpoint in OUTPUT_DIR when there is
        one (an unreadable file is skipped with a warning); otherwise, or with resume=False,
        load the weights of MODEL.WEIGHTS (nothing when it is empty) and start at iteration 0."""
        if resume:
            found = load_newest_complete_checkpoint(self.checkpointer, self.cfg.OUTPUT_DIR)
            if found is not None:
                path, extra = found
                self.start_iter = int(extra["iteration"]) + 1
                self._resume_state = extra
                if "seed" in extra and int(extra["seed"]) != self.seed:
                    logger.info("Using the checkpoint's seed %d (config: %d) so the data order continues",
                                int(extra["seed"]), self.seed)
                    self.seed = int(extra["seed"])
                logger.info("Resuming from %s: next iteration %d", path, self.start_iter)
                return
            logger.info("No usable checkpoint in %s; loading MODEL.WEIGHTS", self.cfg.OUTPUT_DIR)
        self.checkpointer.load(self.cfg.MODEL.WEIGHTS, checkpointables=[])
        self.start_iter = 0
        self._resume_state = None

    def _per_rank_entry(self, key: str) -> Optional[Any]:
        """This process's entry of a per-rank list in the checkpoint (None when the process count changed)."""
        values = (self._resume_state or {}).get(key)
        if values is None:
            return None
        if len(values) != get_world_size():
            logger.warning("The checkpoint was written by %d processes, this run has %d: %s not restored",
                           len(values), get_world_size(), key)
            return None
        return values[get_rank()]

    # ------------------------------------------------------------------ training loop

    def train(self) -> Dict[str, Any]:
        """Trains from `start_iter` to SOLVER.MAX_ITER; returns the last evaluation's results."""
        logger.info("Starting training from iteration %d to %d (%d processes)", self.start_iter, self.max_iter,
                    get_world_size())
        self._before_train()
        succeeded = False
        try:
            if self.start_iter >= self.max_iter:
                logger.info("Nothing to train: the checkpoint is at the last iteration")
                self._evaluate(final=True)
            for self.iter in range(self.start_iter, self.max_iter):
                self._run_iteration()
            succeeded = True
        finally:
            self._after_train(succeeded)
        return self.latest_eval_results

    def _before_train(self) -> None:
        cfg = self.cfg
        self._loader_start = self._per_rank_entry("loader_positions") or 0
        if self._resume_state is not None and self._loader_start == 0 and self.start_iter > 0:
            # No per-process position (process count changed): assume every image was used.
            self._loader_start = self.start_iter * self._batch_size_per_process()
        self.train_loader = self.build_train_loader(cfg, self.seed, self._loader_start)
        self._data_iter = iter(self.train_loader)
        rng = self._per_rank_entry("rng_states")
        if rng is not None:
            restore_rng_state(rng)
        self.model.train()
        if is_main_process():
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            self._writers = [JSONLinesWriter(os.path.join(cfg.OUTPUT_DIR, "metrics.json")),
                             TensorBoardWriter(cfg.OUTPUT_DIR)]
            if sys.stderr.isatty():
                from tqdm import tqdm

                self._bar = tqdm(total=self.max_iter, initial=self.start_iter, desc="train", unit="it",
                                 dynamic_ncols=True)
        self._train_start = time.perf_counter()

    def _after_train(self, succeeded: bool) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        for writer in self._writers:
            writer.close()
        self._writers = []
        if is_main_process():
            done = max(self.iter + 1 - self.start_iter, 0) if succeeded else max(self.iter - self.start_iter, 0)
            elapsed = time.perf_counter() - self._train_start
            logger.info("Training %s after %d iterations in %s (%.4f s/it); data records skipped: %d",
                        "finished" if succeeded else "stopped", done, _format_seconds(elapsed),
                        elapsed / max(done, 1), self._num_skipped())
            self._write_curves()

    def _write_curves(self) -> None:
        """curves.png from metrics.json; a plotting problem is logged, never raised (it must not hide
        the training's own outcome)."""
        try:
            path = plot_training_curves(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"),
                                        os.path.join(self.cfg.OUTPUT_DIR, "curves.png"))
            if path:
                logger.info("Wrote %s", path)
        except Exception as e:  # noqa: BLE001 - see docstring
            logger.warning("Could not draw the training curves: %s: %s", type(e).__name__, e)

    def _batch_size_per_process(self) -> int:
        return self.cfg.SOLVER.IMS_PER_BATCH // get_world_size()

    def _num_skipped(self) -> int:
        return int(getattr(self.train_loader, "num_skipped", 0) or 0)

    def _run_iteration(self) -> None:
        it = self.iter
        start = time.perf_counter()
        data = next(self._data_iter)
        data_time = time.perf_counter() - start
        lr = self._reported_lr()
        losses = self.run_step(data)
        iteration_time = time.perf_counter() - start
        self._iteration_times.append(iteration_time)
        self._window.add({**losses, "time": iteration_time, "data_time": data_time})

        last = it == self.max_iter - 1
        if (it + 1) % self.cfg.SOLVER.CHECKPOINT_PERIOD == 0:
            self.save_checkpoint(f"model_{it:07d}")
        if last:
            self.save_checkpoint("model_final")
        period = self.cfg.TEST.EVAL_PERIOD
        evaluated = last or (period > 0 and (it + 1) % period == 0)
        if evaluated:
            self._evaluate(final=last)
        if self._bar is not None:
            self._bar.set_postfix(total_loss=f"{losses['total_loss']:.3f}", lr=f"{lr:.2e}", refresh=False)
            self._bar.update(1)
        if evaluated or (it + 1) % self.log_period == 0:
            self._write_metrics(it, lr)

    def _reported_lr(self) -> float:
        """The lr of the group with the most parameters (detectron2's choice), before this step."""
        group = max(self.optimizer.param_groups, key=lambda g: len(g["params"]))
        return float(group["lr"])

    def run_step(self, data: List[Dict[str, Any]]) -> Dict[str, float]:
        """One optimisation step on the batch `data`; returns the losses averaged over processes,
        and their sum as "total_loss". Raises FloatingPointError, before changing any weight,
        when a loss is NaN or infinite."""
        with self._autocast():
            loss_dict = self.model(data)
        total = sum(loss_dict.values())
        values = self._reduce_losses(loss_dict)
        self._check_finite(values)
        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(total).backward()
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            total.backward()
            self.optimizer.step()
        self.scheduler.step()
        return values

    def _reduce_losses(self, loss_dict: Mapping[str, torch.Tensor]) -> Dict[str, float]:
        """Loss values averaged over processes (one all_reduce), plus total_loss.

        Every process gets the same numbers, so a non-finite loss anywhere stops all of
        them together instead of leaving the others waiting in the next collective.
        """
        names = list(loss_dict)
        stacked = torch.stack([loss_dict[n].detach().float() for n in names])
        if get_world_size() > 1:
            torch.distributed.all_reduce(stacked)
            stacked = stacked / get_world_size()
        values = dict(zip(names, stacked.tolist()))
        values["total_loss"] = float(sum(values[n] for n in names))
        return values

    def _check_finite(self, values: Mapping[str, float]) -> None:
        if all(math.isfinite(v) for v in values.values()):
            return
        terms = ", ".join(f"{k}={v}" for k, v in values.items())
        last = self.checkpointer.get_checkpoint_file() if self.checkpointer.has_checkpoint() else None
        raise FloatingPointError(
            f"Loss is NaN or infinite at iteration {self.iter}: {terms}. Training stopped before the "
            f"optimizer step; no checkpoint was written for this iteration"
            + (f" (the last one is {last})." if last else "."))

    # ------------------------------------------------------------------ checkpoints, evaluation, metrics

    def _loader_position(self) -> int:
        """Records this process has taken from its sampler stream so far (trained on or skipped)."""
        done = self.iter + 1 - self.start_iter
        return self._loader_start + done * self._batch_size_per_process() + self._num_skipped()

    def save_checkpoint(self, name: str) -> None:
        """Writes OUTPUT_DIR/name.pth for the current iteration (every process must call it)."""
        rng_states = all_gather_objects(capture_rng_state())
        positions = all_gather_objects(self._loader_position())
        self.checkpointer.save(name, iteration=self.iter, seed=self.seed, world_size=get_world_size(),
                               rng_states=rng_states, loader_positions=positions)

    def _evaluate(self, final: bool = False) -> None:
        """Evaluates on DATASETS.TEST; the final evaluation adds the test-time augmented one
        when TEST.AUG.ENABLED (as detectron2's train_net, TTA only once training is done)."""
        if not self.cfg.DATASETS.TEST:
            return
        with preserved_rng_state():
            results = self.test(self.cfg, self.unwrapped_model)
            if final and self.cfg.TEST.AUG.ENABLED:
                results = {**results, **self.test_with_TTA(self.cfg, self.unwrapped_model)}
        self.model.train()
        self.latest_eval_results = results
        if is_main_process() and results:
            self._pending_eval.update(flatten_results(results))

    def _write_metrics(self, it: int, lr: float) -> None:
        medians = self._window.pop_medians()
        skipped = self._num_skipped()
        if get_world_size() > 1:
            skipped = sum(all_gather_objects(skipped))
        if not is_main_process():
            return
        record: Dict[str, Any] = {"iteration": it, **medians, "lr": lr, "skipped_records": skipped}
        record.update(self._pending_eval)
        self._pending_eval = {}
        for writer in self._writers:
            if isinstance(writer, TensorBoardWriter):
                writer.write(it, {k: v for k, v in record.items() if k != "iteration"})
            else:
                writer.write(record)
        self._log_line(record)

    def _log_line(self, record: Mapping[str, Any]) -> None:
        it = record["iteration"]
        eta = ""
        if self._iteration_times:
            per_iter = sorted(self._iteration_times)[len(self._iteration_times) // 2]
            eta = f"  eta: {_format_seconds(per_iter * (self.max_iter - it - 1))}"
        losses = "  ".join(f"{k}: {record[k]:.4g}" for k in ["total_loss"] + sorted(
            k for k in record if k.startswith("loss_")) if k in record)
        timing = "  ".join(f"{k}: {record[k]:.4f}" for k in ("time", "data_time") if k in record)
        # With a progress bar on the terminal, the console handler of train_cli leaves this line to the
        # log file (PROGRESS_BAR_SHOWS_IT), so it does not break the bar.
        logger.info("iter: %d/%d%s  %s  lr: %.6g  %s  skipped records: %d", it, self.max_iter - 1, eta, losses,
                    record["lr"], timing, record["skipped_records"],
                    extra={PROGRESS_BAR_SHOWS_IT: self._bar is not None})
