"""`mrcnn train` end to end on coco-mini with a tiny model: outputs, metrics, evaluation, --eval-only."""
import json

import torch
import yaml

from engine_tiny import BASE_CONFIG, TINY_OPTS, register_val_subset
from mrcnn_plugin.engine.train_cli import build_parser, main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_train_writes_checkpoints_metrics_events_curves_and_evaluates(tmp_path, capsys):
    """30 iterations on coco_mini_train (SEED -1, EVAL_PERIOD 20) write config.yaml with the drawn
    seed, metrics.json (a line at iterations 19 and 29 with every loss, total_loss, lr, time,
    data_time and the evaluation's AP values on a 6-image coco_mini_val subset), model_final.pth
    (model, optimizer, scheduler, iteration 29, RNG states, sampler position), last_checkpoint,
    TensorBoard events, log.txt and curves.png; then --eval-only on model_final.pth prints the AP table."""
    val = register_val_subset("engine_coco_mini_val_6", tmp_path / "val", 6)
    out = tmp_path / "run"
    overrides = TINY_OPTS + [
        "OUTPUT_DIR", str(out), "DATASETS.TEST", f"('{val}',)", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
        "TEST.DETECTIONS_PER_IMAGE", "20"]
    assert main(["--config-file", BASE_CONFIG] + overrides +
                ["SEED", "-1", "SOLVER.MAX_ITER", "30", "TEST.EVAL_PERIOD", "20"]) == 0

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["SEED"] >= 0 and config["SOLVER"]["MAX_ITER"] == 30

    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [19, 29]
    for r in records:
        for key in ("loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc", "total_loss", "lr",
                    "time", "data_time", "skipped_records", "bbox/AP", "segm/AP", "bbox/AP50"):
            assert key in r, (key, r)
        assert r["total_loss"] > 0 and r["lr"] > 0
    assert records[-1]["bbox/AP"] >= 0.0  # a number (detections exist at score threshold 0)

    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["iteration"] == 29
    assert {"model", "optimizer", "scheduler", "rng_states", "loader_positions", "seed"} <= set(final)
    assert final["loader_positions"] == [60] and final["seed"] == config["SEED"]
    assert list(out.glob("events.out.tfevents.*"))
    assert (out / "curves.png").read_bytes()[:8] == PNG_SIGNATURE
    assert "iter: 29/29" in (out / "log.txt").read_text()

    capsys.readouterr()
    assert main(["--config-file", BASE_CONFIG, "--eval-only"] + overrides + [
        "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    assert f"{val}:" in printed and "| bbox |" in printed and "| segm |" in printed


def test_train_parser_has_detectron2_flags():
    """The train parser takes detectron2's flags and trailing KEY VALUE overrides, and is reachable
    as a subcommand through add_train_parser (what `mrcnn` uses)."""
    import argparse

    from mrcnn_plugin.engine.train_cli import add_train_parser, run_train

    args = build_parser().parse_args(["--config-file", "f.yaml", "--resume", "--num-gpus", "2", "--num-machines",
                                      "2", "--machine-rank", "1", "--dist-url", "tcp://h:1", "A.B", "3"])
    assert (args.config_file, args.resume, args.eval_only, args.num_gpus, args.num_machines, args.machine_rank,
            args.dist_url, args.opts) == ("f.yaml", True, False, 2, 2, 1, "tcp://h:1", ["A.B", "3"])
    top = argparse.ArgumentParser(prog="mrcnn")
    add_train_parser(top.add_subparsers(dest="command"))
    args = top.parse_args(["train", "--eval-only", "MODEL.WEIGHTS", "w.pth"])
    assert args.func is run_train and args.eval_only and args.opts == ["MODEL.WEIGHTS", "w.pth"]
