"""The project's main job, end to end on the embedded Shapes data:

    1. generate and register the Shapes splits (first run only),
    2. train Mask R-CNN R18-FPN from scratch (projects/Shapes/configs/mask_rcnn_R18_FPN_shapes.yaml),
    3. evaluate on the held-out split (COCO box and mask AP),
    4. export one TorchScript file (model.ts + model.json),
    5. build the C++ program and run it on held-out images,
    6. draw predictions from Python and from C++,

writing everything under outputs/quickstart/ and printing where to look.

    python projects/Shapes/quickstart.py [--iters N] [--output DIR] [--num-images K] [KEY VALUE ...]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SHAPES = Path(__file__).resolve().parent
REPO = SHAPES.parents[1]
sys.path.insert(0, str(SHAPES))

CONFIG = SHAPES / "configs" / "mask_rcnn_R18_FPN_shapes.yaml"


def _step(title: str) -> float:
    print(f"\n==> {title}", flush=True)
    return time.perf_counter()


def _train(config_file: Path, out: Path, opts) -> dict:
    """Trains and evaluates; returns {"results": AP dict, "train_seconds": s, "iterations": n}."""
    from mrcnn_plugin.engine import Trainer
    from mrcnn_plugin.engine.train_cli import setup

    cfg = setup(str(config_file), ["OUTPUT_DIR", str(out / "train")] + list(opts))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    start = time.perf_counter()
    results = trainer.train()
    return {"results": results, "train_seconds": time.perf_counter() - start,
            "iterations": int(cfg.SOLVER.MAX_ITER), "config": cfg, "model": trainer.unwrapped_model}


def _evaluate_inference_modes(cfg, model) -> dict:
    """AP and evaluation time of the fast inference mode in fp32 and in bf16 (issue: bf16 must keep
    AP within 1 point of fp32), each evaluated like the trained model on the held-out split."""
    from mrcnn_plugin.engine import Trainer
    from mrcnn_plugin.modeling.fast_inference import prepare_for_inference
    from mrcnn_plugin.modeling.inference_plan import sample_for_sizes
    from mrcnn_plugin.utils.cpu import bf16_native, cpu_name

    sample = sample_for_sizes(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)  # the plan is timed at the test size

    modes = {}
    for name, bf16 in (("fast_fp32", False), ("fast_bf16", True)):
        if bf16 and not bf16_native(str(cfg.MODEL.DEVICE)):
            # Emulated bfloat16 is several times slower than float32 and proves nothing about AP.
            modes[name] = {"skipped": f"{cpu_name()} has no native bfloat16 (AVX512-BF16 or AMX)"}
            print(f"    {name}: skipped, {modes[name]['skipped']}")
            continue
        mode_cfg = cfg.clone()
        mode_cfg.defrost()
        mode_cfg.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, name)
        start = time.perf_counter()
        fast = prepare_for_inference(model, bf16=bf16, sample=sample)
        results = Trainer.test(mode_cfg, fast)
        modes[name] = {"results": results, "eval_seconds": round(time.perf_counter() - start, 1),
                       "plan": fast.inference_plan.label(), "plan_source": fast.inference_plan.source,
                       "plan_timings_ms": fast.inference_plan.timings_ms}
        print(f"    {name}: box AP {results['bbox']['AP']:.1f}"
              + (f", mask AP {results['segm']['AP']:.1f}" if "segm" in results else "")
              + f" ({modes[name]['eval_seconds']:.0f} s)")
    return modes


def _held_out_images(cfg, k: int):
    from mrcnn_plugin.data import DatasetCatalog

    records = DatasetCatalog.get(cfg.DATASETS.TEST[0])
    return [r["file_name"] for r in records[:k]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=None, help="training iterations (default: the config's)")
    parser.add_argument("--output", default=str(REPO / "outputs" / "quickstart"))
    parser.add_argument("--num-images", type=int, default=8, help="held-out images for the pictures")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    opts = list(args.opts)
    if args.iters is not None:
        # Keep the schedule's shape: LR steps at 70% and 90% of the run.
        opts += ["SOLVER.MAX_ITER", str(args.iters),
                 "SOLVER.STEPS", f"({int(args.iters * 0.7)}, {int(args.iters * 0.9)})",
                 "SOLVER.WARMUP_ITERS", str(min(150, max(1, args.iters // 10)))]
    summary = {}

    t = _step("1-3/6 train Mask R-CNN R18-FPN on Shapes and evaluate on the held-out split")
    trained = _train(CONFIG, out, opts)
    cfg = trained["config"]
    results = trained["results"]
    import torch

    from mrcnn_plugin.utils.cpu import cpu_name, isa_flags

    summary.update(train_seconds=round(trained["train_seconds"], 1), iterations=trained["iterations"],
                   results=results, cpu=cpu_name(), isa_flags=isa_flags(), threads=torch.get_num_threads())
    from mrcnn_plugin.evaluation import format_ap_table

    # One test dataset gives {task: metrics}; several give {dataset: {task: metrics}}.
    if all(isinstance(v, dict) and all(isinstance(x, dict) for x in v.values()) for v in results.values()):
        table = "\n\n".join(f"### {name}\n\n{format_ap_table(r)}" for name, r in results.items())
    else:
        table = f"### {cfg.DATASETS.TEST[0]}\n\n{format_ap_table(results)}"
    (out / "ap_table.md").write_text(table + "\n")
    print(table)
    shutil.copy(out / "train" / "curves.png", out / "curves.png")
    print(f"    training took {trained['train_seconds'] / 60:.1f} min ({time.perf_counter() - t:.0f} s with evaluation)")

    _step("3b/6 evaluate the fast inference mode in fp32 (and bf16 where native) on the held-out split")
    summary["inference_modes"] = _evaluate_inference_modes(cfg, trained["model"])

    _step("4/6 export model.ts")
    from mrcnn_plugin.export import export_model

    export_cfg = cfg.clone()
    export_cfg.defrost()
    export_cfg.MODEL.WEIGHTS = str(out / "train" / "model_final.pth")
    ts = export_model(export_cfg, str(out), method="scripting")
    print(f"    wrote {ts}")

    _step("5/6 build the C++ program and run it on held-out images")
    subprocess.run(["bash", str(REPO / "scripts" / "build_cpp.sh")], check=True, cwd=REPO)
    images = _held_out_images(cfg, args.num_images)
    run = subprocess.run([str(REPO / "build" / "cpp" / "mrcnn_infer"), "--model", str(ts), "--threads", "2",
                          "--json", str(out / "cpp_predictions.json"), "--vis", str(out / "pictures_cpp")] + images,
                         capture_output=True, text=True)
    print(run.stdout[-2000:])
    if run.returncode != 0:
        print(run.stderr, file=sys.stderr)
        return run.returncode

    _step("6/6 draw predictions from Python")
    from mrcnn_plugin.demo import main as demo_main

    demo_main(["--config-file", str(CONFIG), "--input", *images, "--output", str(out / "pictures_python"),
               "MODEL.WEIGHTS", str(out / "train" / "model_final.pth"), "OUTPUT_DIR", str(out / "train")])

    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print("\nDone. Look at:")
    for name in ["metrics.json", "ap_table.md", "curves.png", "model.ts", "model.json", "cpp_predictions.json",
                 "pictures_python/", "pictures_cpp/", "train/log.txt"]:
        print(f"  {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
