"""Trains the tiny model 3 iterations on one fixed image, on 1 or 2 processes: the distributed test's
program. Works as a plain script (`--num-procs N` spawns through mrcnn_plugin.engine.launch) and
unchanged under `python -m torch.distributed.run --nproc_per_node 2`.

    python engine_dist_script.py --num-procs 2 --out DIR

Every batch is the same image on every process (a dataset of one record, no flip), and the RPN and
ROI heads use all their anchors / proposals (sampling sizes larger than any image has), so nothing
random is left: a 2-image batch on one process and 1 image on each of two processes train the same
weights. With different images they would not: detectron2's losses are normalised over the whole
batch (e.g. the mask loss over all foreground ROIs), which DDP's average of per-process losses
equals only when every process contributes the same counts.
"""
import argparse
import copy
import json
import os
import sys

ONE_IMAGE = "engine_one_image"
OVERRIDES = [
    "DATASETS.TRAIN", f"('{ONE_IMAGE}',)", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3",
    "SOLVER.WARMUP_ITERS", "0", "SOLVER.BASE_LR", "0.002", "MODEL.RESNETS.NORM", "FrozenBN",
    "INPUT.RANDOM_FLIP", "none", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "1000000",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "1000000", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64",
]


def _register_one_image() -> None:
    """ONE_IMAGE: the first coco_mini_train record with at least three objects."""
    from mrcnn_plugin.data import DatasetCatalog

    if ONE_IMAGE in DatasetCatalog:
        return
    records = DatasetCatalog.get("coco_mini_train")
    record = next(r for r in records if sum(a.get("iscrowd", 0) == 0 for a in r["annotations"]) >= 3)
    DatasetCatalog.register(ONE_IMAGE, lambda: [copy.deepcopy(record)])


def _parameter_sum(model) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def train(out_dir: str) -> None:
    """What every process runs."""
    from torch.nn.parallel import DistributedDataParallel

    from engine_tiny import BASE_CONFIG, TINY_OPTS
    from mrcnn_plugin.engine import Trainer, get_world_size, is_main_process
    from mrcnn_plugin.engine.train_cli import setup

    _register_one_image()
    cfg = setup(BASE_CONFIG, TINY_OPTS + OVERRIDES + ["OUTPUT_DIR", out_dir])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    initial = _parameter_sum(trainer.unwrapped_model)
    trainer.train()
    if is_main_process():
        info = {"world_size": get_world_size(), "batch_per_process": trainer.train_loader.batch_size,
                "ddp": isinstance(trainer.model, DistributedDataParallel),
                "initial_parameter_sum": initial, "final_parameter_sum": _parameter_sum(trainer.unwrapped_model)}
        with open(os.path.join(out_dir, "run_info.json"), "w") as f:
            json.dump(info, f)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-procs", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    from mrcnn_plugin.engine import launch

    launch(train, args.num_procs, args=(args.out,))
    return 0


if __name__ == "__main__":
    sys.exit(main())
