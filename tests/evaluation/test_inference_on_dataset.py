"""inference_on_dataset with a fake model that returns the ground truth, alone and with 2 processes."""
import io
import json
import logging
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mrcnn_plugin.evaluation import (COCOEvaluator, DatasetEvaluator, DatasetEvaluators,
                                     inference_on_dataset)


class GroundTruthModel(nn.Module):
    """Returns the stored Instances of each input's image_id; records the mode it was called in."""

    def __init__(self, per_image):
        super().__init__()
        self.per_image = per_image
        self.weight = nn.Parameter(torch.ones(1))  # so that autograd would track something
        self.calls = []  # (training, grad enabled) per call

    def forward(self, batched_inputs):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return [{"instances": self.per_image[x["image_id"]]} for x in batched_inputs]


class RecordingEvaluator(DatasetEvaluator):
    """Counts reset / process calls and reports them under the task `name`."""

    def __init__(self, name):
        self.name, self.resets, self.images = name, 0, 0

    def reset(self):
        self.resets += 1

    def process(self, inputs, outputs):
        assert len(inputs) == len(outputs)
        self.images += len(inputs)

    def evaluate(self):
        return {self.name: {"images": float(self.images)}}


def test_inference_gives_ground_truth_ap_100(instances_json, gt_masks_instances, helpers, caplog):
    """Batches of 3 images through the fake model give bbox and segm AP 100 as in the direct feed;
    the model ran in eval mode without autograd, its training flag is restored, and the total and
    per-image times are logged."""
    model = GroundTruthModel(gt_masks_instances).train()
    batches = helpers.batches_of(gt_masks_instances, batch_size=3)
    with caplog.at_level(logging.INFO, logger="mrcnn_plugin.evaluation"):
        results = inference_on_dataset(model, batches, COCOEvaluator(instances_json, tasks=("bbox", "segm")))
    for task in ("bbox", "segm"):
        for metric in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            assert results[task][metric] == pytest.approx(100.0), (task, metric)
    assert len(model.calls) == len(batches)
    assert set(model.calls) == {(False, False)}
    assert model.training
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Total inference time") and "s / img" in m for m in messages)


def test_inference_accepts_generators_lists_of_evaluators_and_no_evaluator(gt_masks_instances, helpers,
                                                                         caplog, monkeypatch):
    """A generator of batches (no len) works; a list of evaluators is merged, each reset once and
    seeing every image; no evaluator gives {}. Without a terminal, progress goes to plain log lines."""
    model = GroundTruthModel(gt_masks_instances)
    batches = helpers.batches_of(gt_masks_instances, batch_size=4)
    first, second = RecordingEvaluator("a"), RecordingEvaluator("b")
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal, even under `pytest -s`
    with caplog.at_level(logging.INFO, logger="mrcnn_plugin.evaluation"):
        results = inference_on_dataset(model, (b for b in batches), [first, second], log_period_s=0.0)
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Inference done")]
    assert len(progress) == len(batches) and progress[-1].startswith(f"Inference done {len(batches)}/?")
    assert results == {"a": {"images": float(len(gt_masks_instances))},
                       "b": {"images": float(len(gt_masks_instances))}}
    assert first.resets == second.resets == 1
    assert inference_on_dataset(model, batches[:2], None) == {}


class _Terminal(io.StringIO):
    """A stand-in stderr that says it is a terminal."""

    def isatty(self):
        return True


def test_terminal_gets_a_progress_bar_instead_of_log_lines(gt_masks_instances, helpers, caplog, monkeypatch):
    """When stderr is a terminal, a tqdm bar is drawn on it and no periodic progress lines are logged."""
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    batches = helpers.batches_of(gt_masks_instances, batch_size=8)
    with caplog.at_level(logging.INFO, logger="mrcnn_plugin.evaluation"):
        inference_on_dataset(GroundTruthModel(gt_masks_instances), batches, None, log_period_s=0.0)
    assert f"{len(batches)}/{len(batches)}" in terminal.getvalue()
    assert not [r for r in caplog.records if r.getMessage().startswith("Inference done")]


def test_dataset_evaluators_reject_duplicate_tasks():
    """Two evaluators reporting the same task name are an error rather than one hiding the other."""
    with pytest.raises(ValueError, match="'a'"):
        DatasetEvaluators([RecordingEvaluator("a"), RecordingEvaluator("a")]).evaluate()


def _distributed_worker(rank, world_size, init_file, json_file, per_image, out_prefix):
    """One process of the 2-process run: evaluates its share of the images (rank 1 also repeats
    one image of rank 0, as a padding sampler would) and writes what inference_on_dataset returned."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        image_ids = sorted(per_image)[rank::world_size]
        if rank == 1:
            image_ids.append(sorted(per_image)[0])
        batches = [[{"image_id": i}] for i in image_ids]
        results = inference_on_dataset(GroundTruthModel(per_image), batches,
                                       COCOEvaluator(json_file, tasks=("bbox",)))
        with open(f"{out_prefix}.{rank}.json", "w") as f:
            json.dump(results, f)
    finally:
        dist.destroy_process_group()


def test_distributed_gathers_to_rank_0(instances_json, instances_coco, helpers, tmp_path):
    """With 2 gloo processes each evaluating half of the images, rank 0 gets bbox AP 100 over all of
    them (a repeated image counted once) and rank 1 gets {}."""
    per_image = helpers.ground_truth_instances(instances_coco)
    mp.spawn(_distributed_worker, nprocs=2, join=True,
             args=(2, str(tmp_path / "init"), instances_json, per_image, str(tmp_path / "out")))
    rank0 = json.loads((tmp_path / "out.0.json").read_text())
    rank1 = json.loads((tmp_path / "out.1.json").read_text())
    assert rank1 == {}
    for metric in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert rank0["bbox"][metric] == pytest.approx(100.0), metric
    assert not math.isnan(rank0["bbox"]["AP-person"])
