"""`mrcnn bench`: this project's R50-FPN Mask R-CNN against torchvision's, side by side in one run.

Every candidate takes the same original-size photo and returns detections at
that size (resizing and mask pasting included), on the same number of threads.
Candidates are called round-robin after warm-up, so a machine that slows down
mid-run slows all of them alike; only the ratios within one run are meant to
be compared. Weights: the golden rule of ../shared/golden/weights_rule.py for
this project (the reference keeps ~100 detections), seeded random weights with
a zero score threshold for torchvision (so it keeps its 100 too).

Reported per candidate: median latency, ratio to torchvision eager, achieved
GFLOP/s (fvcore's multiply-add count of the architecture at the network's
input size, x2) against the fp32 / bf16 matrix-product peak measured in the
same run, and the peak extra resident memory of one inference (measured in a
child process per candidate, whose RSS high-water mark is reset after warm-up).
A training step (forward, backward, SGD step; batch 2) is compared with
torchvision's in the same way. With --device cuda every candidate, the
training step and the matrix-product peak run on the GPU (the photo starts in
host memory, as a service would receive it), each timed call ends with the
GPU's work done, and memory is the peak extra GPU memory allocated.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .bench_peers import PEERS
from .utils.allocator import GLIBC_TUNABLES_KEEP_FREED_MEMORY, keep_freed_memory
from .utils.errors import DeviceUnavailableError

__all__ = ["main", "matmul_peak_gflops", "golden_cfg", "golden_model"]

_REPO = Path(__file__).resolve().parents[1]
_DEFAULT_SHARED = _REPO.parent / "shared"
_DEFAULT_IMAGE = "data/coco-mini/val2017/000000018575.jpg"  # 640x480 -> 800x1067 at test time
_TRAIN_IMAGES = ("data/coco-mini/train2017", 2)
_CONFIG = _REPO / "mrcnn_plugin" / "configs" / "COCO-InstanceSegmentation" / "mask_rcnn_R_50_FPN_3x.yaml"


def matmul_peak_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 10, device: str = "cpu") -> float:
    """Best GFLOP/s of an n x n x n matrix product in `dtype` on the current threads (or GPU)."""
    a = torch.randn(n, n).to(device=device, dtype=dtype)
    b = torch.randn(n, n).to(device=device, dtype=dtype)
    torch.mm(a, b)
    _sync(device)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def _sync(device: str) -> None:
    """Waits for the GPU's queued work, so that a wall-clock time covers it (no-op on CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- models


def golden_cfg():
    from .config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(str(_config_path()))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def _config_path() -> Path:
    if _CONFIG.exists():
        return _CONFIG
    return _REPO / "configs" / "COCO-InstanceSegmentation" / "mask_rcnn_R_50_FPN_3x.yaml"


def golden_model(shared: Path, device: str = "cpu") -> nn.Module:
    """This project's R50-FPN Mask R-CNN with the golden weights rule, eval mode, on `device`."""
    import importlib.util

    from .modeling import build_model

    rule_file = shared / "golden" / "weights_rule.py"
    if not rule_file.exists():
        raise FileNotFoundError(f"mrcnn bench needs the golden weights rule at {rule_file} (--shared DIR)")
    spec = importlib.util.spec_from_file_location("golden_weights_rule", rule_file)
    rule = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rule)
    model = build_model(golden_cfg()).eval()
    model.load_state_dict(rule.fill_state_dict(model.state_dict()))
    return model.to(device)


def _torchvision_model(train: bool = False, device: str = "cpu") -> nn.Module:
    """torchvision's maskrcnn_resnet50_fpn, seeded random weights, FrozenBN and res2+ trainable like ours."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.resnet import resnet50
    from torchvision.ops import FrozenBatchNorm2d

    torch.manual_seed(0)
    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), trainable_layers=3)
    # A zero score threshold: random weights score every class about equally low.
    model = MaskRCNN(backbone, num_classes=91, box_score_thresh=0.0, box_detections_per_img=100)
    return model.train(train).to(device)


class _Wrapped:
    """A named candidate: call() runs one inference of the benchmark image."""

    def __init__(self, name: str, call: Callable[[], int]):
        self.name = name
        self.call = call


def _candidates(names: List[str], shared: Path, image_bgr: Tensor, work_dir: Path,
                cpp_binary: Optional[Path], threads: int, device: str = "cpu",
                unavailable: Optional[Dict[str, str]] = None) -> List[_Wrapped]:
    """The inference candidates in `names`, each bound to the benchmark image (uint8 [3, H, W], BGR,
    in host memory: our detectors take it there, as a service would), each call ending with the
    device's work done. A runtime peer that cannot run is left out, its reason in `unavailable`."""
    from .bench_peers import PeerUnavailable, peer_candidate
    from .export import export_model, load_exported
    from .export.inference_module import ExportableDetector
    from .modeling.fast_inference import prepare_for_inference

    cfg = golden_cfg()
    min_size, max_size = cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST
    image_rgb01 = (image_bgr.flip(0).float() / 255.0).to(device)
    out: List[_Wrapped] = []
    model = golden_model(shared, device) if any(not n.startswith("torchvision") for n in names) else None

    def ours(module: nn.Module) -> Callable[[], int]:
        def call() -> int:
            n = int(module([image_bgr])[0]["scores"].shape[0])
            _sync(device)
            return n
        return call

    def detector(m: nn.Module) -> nn.Module:
        return ExportableDetector(m, min_size, max_size).to(device).eval()

    for name in names:
        if name in ("torchvision eager", "torchvision scripted"):
            scripted = name.endswith("scripted")  # a scripted torchvision detector returns (losses, detections)
            tv = _torchvision_model(device=device)
            tv = torch.jit.script(tv) if scripted else tv

            def tv_call(tv=tv, scripted=scripted) -> int:
                detections = tv([image_rgb01])[1] if scripted else tv([image_rgb01])
                _sync(device)
                return int(detections[0]["scores"].shape[0])
            out.append(_Wrapped(name, tv_call))
        elif name == "ours eager":
            out.append(_Wrapped(name, ours(detector(model))))
        elif name == "ours scripted":
            out.append(_Wrapped(name, ours(torch.jit.script(detector(model)))))
        elif name == "ours exported (Python)":
            path = export_model(cfg, str(work_dir / "export"), model=model)
            out.append(_Wrapped(name, ours(load_exported(str(path), device)[0])))
        elif name == "ours C++":
            if cpp_binary is None or not cpp_binary.exists():
                print(f"[bench] skipping {name}: no C++ program (build it with scripts/build_cpp.sh)")
                continue
            path = work_dir / "export" / "model.ts"
            if not path.exists():
                export_model(cfg, str(work_dir / "export"), model=model)
            image_file = work_dir / "image.png"
            _save_png(image_bgr, image_file)
            out.append(_Wrapped(name, lambda p=path, f=image_file: _cpp_latency(cpp_binary, p, f, threads, device)))
        elif name == "ours fast fp32":
            out.append(_Wrapped(name, ours(detector(prepare_for_inference(model)))))
        elif name == "ours fast bf16":
            out.append(_Wrapped(name, ours(detector(prepare_for_inference(model, bf16=True)))))
        elif name in PEERS:
            try:
                out.append(_Wrapped(name, peer_candidate(name, _torchvision_model(), image_rgb01, work_dir, threads,
                                                         device)))
            except PeerUnavailable as e:
                print(f"[bench] skipping {name}: {e}")
                if unavailable is not None:
                    unavailable[name] = str(e)
        else:
            raise ValueError(f"unknown candidate {name!r}")
    return out


def _save_png(image_bgr: Tensor, path: Path) -> None:
    from PIL import Image

    Image.fromarray(image_bgr.flip(0).permute(1, 2, 0).numpy()).save(path)


def _cpp_latency(binary: Path, model: Path, image: Path, threads: int, device: str = "cpu") -> float:
    """Seconds of the C++ program's third inference of `image` (the first two warm LibTorch up)."""
    result = subprocess.run([str(binary), "--model", str(model), "--threads", str(threads), "--device",
                             "cuda" if device.startswith("cuda") else "cpu"] + [str(image)] * 3,
                            capture_output=True, text=True, check=True)
    last = [line for line in result.stdout.splitlines() if line.endswith(" ms")][-1]
    return float(last.rsplit(",", 1)[1].strip().split()[0]) / 1000.0


# ----------------------------------------------------------------------------- measuring


def _round_robin(candidates: List[_Wrapped], warmup: int, rounds: int) -> Dict[str, List[float]]:
    """Seconds per call for each candidate, calls interleaved: round r calls every candidate once."""
    times: Dict[str, List[float]] = {c.name: [] for c in candidates}
    with torch.no_grad():
        for _ in range(warmup):
            for c in candidates:
                c.call()
        for r in range(rounds):
            order = candidates if r % 2 == 0 else candidates[::-1]  # no candidate always runs first
            for c in order:
                start = time.perf_counter()
                value = c.call()
                elapsed = time.perf_counter() - start
                # The C++ candidate returns its own in-process latency (process start excluded).
                times[c.name].append(value if isinstance(value, float) else elapsed)
    return times


def _peak_memory_child(name: str, shared: Path, image_file: str, threads: int, device: str = "cpu") -> float:
    """MiB of extra memory one inference of candidate `name` needs, in a fresh process: resident
    host memory on CPU, allocated GPU memory on CUDA."""
    # Measured with glibc's default allocator: one that keeps freed memory would already hold the
    # inference's peak before the measured call.
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    code = ("import sys; from mrcnn_plugin.bench import _memory_child; "
            "_memory_child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])")
    result = subprocess.run([sys.executable, "-c", code, name, str(shared), image_file, str(threads), device],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        print(f"[bench] memory of {name} not measured: {result.stderr.strip().splitlines()[-1:]}")
        return float("nan")
    return float(result.stdout.strip().splitlines()[-1])


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _memory_child(name: str, shared: str, image_file: str, threads: int, device: str = "cpu") -> None:
    torch.set_num_threads(threads)
    image = _load_image(Path(image_file))
    with tempfile.TemporaryDirectory() as tmp:
        (candidate,) = _candidates([name], Path(shared), image, Path(tmp), None, threads, device)
        with torch.no_grad():
            candidate.call()
            candidate.call()
            if device.startswith("cuda"):
                before = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                candidate.call()
                extra_kib = (torch.cuda.max_memory_allocated() - before) / 1024.0
            else:
                before = _rss_kib("VmRSS")
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
                candidate.call()
                extra_kib = _rss_kib("VmHWM") - before
    print(extra_kib / 1024.0)


def _load_image(path: Path) -> Tensor:
    from .data.detection_utils import read_image_tensor

    return read_image_tensor(str(path), format="BGR")


def _network_flops(shared: Path, image_bgr: Tensor) -> Tuple[float, Tuple[int, int], Dict[str, float]]:
    """fvcore multiply-adds x2 of the architecture on the benchmark image, the network's input
    size, and the same count for each of STAGES and the "total"."""
    from .export.inference_module import resize_for_test
    from .modeling.complexity import count_flops

    cfg = golden_cfg()
    resized = resize_for_test(image_bgr, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    h, w = int(resized.shape[1]), int(resized.shape[2])
    flops = count_flops(golden_model(shared), h, w, modules=STAGES)
    by_stage = {name: 2.0 * count for name, count in flops.by_module}
    by_stage["total"] = 2.0 * flops.total
    return 2.0 * flops.total, (h, w), by_stage


# ----------------------------------------------------------------------------- where the time goes

# Submodules of the detector timed one by one; a stage's time includes the stages nested in it.
STAGES = ("backbone", "backbone.bottom_up", "proposal_generator", "proposal_generator.rpn_head", "roi_heads",
          "roi_heads.box_pooler", "roi_heads.box_head", "roi_heads.mask_pooler", "roi_heads.mask_head")


def stage_times(model: nn.Module, call: Callable[[], int], rounds: int,
                stages: Sequence[str] = STAGES, device: str = "cpu") -> Dict[str, float]:
    """Median seconds per call spent in each of `stages` of `model` (the detector that `call`
    runs), measured with forward hooks over `rounds` calls, plus "total" for the whole call. A
    stage run several times in one call counts the sum."""
    samples: Dict[str, List[float]] = {name: [] for name in tuple(stages) + ("total",)}
    in_call: Dict[str, float] = {}
    started: Dict[str, float] = {}
    handles = []
    for name in stages:
        module = model.get_submodule(name)

        def pre(*_, name=name):
            _sync(device)
            started[name] = time.perf_counter()

        def post(*_, name=name):
            _sync(device)
            in_call[name] = in_call.get(name, 0.0) + time.perf_counter() - started[name]

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        for _ in range(rounds):
            in_call.clear()
            start = time.perf_counter()
            call()
            in_call["total"] = time.perf_counter() - start
            for name in samples:
                samples[name].append(in_call.get(name, 0.0))
    finally:
        for handle in handles:
            handle.remove()
    return {name: statistics.median(values) for name, values in samples.items()}


def _stage_rows(shared: Path, image_bgr: Tensor, stage_flops: Dict[str, float], peak: float,
                rounds: int, device: str = "cpu") -> List[Dict]:
    """The fast fp32 model's time per stage, with its share of the total and its GFLOP/s."""
    from .export.inference_module import ExportableDetector
    from .modeling.fast_inference import prepare_for_inference

    cfg = golden_cfg()
    fast = prepare_for_inference(golden_model(shared, device))
    detector = ExportableDetector(fast, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST).to(device).eval()
    call = lambda: int(detector([image_bgr])[0]["scores"].shape[0])  # noqa: E731
    with torch.no_grad():
        for _ in range(2):
            call()
        seconds = stage_times(fast, call, rounds, device=device)
    rows = []
    for name in STAGES + ("total",):
        gflop = stage_flops[name] / 1e9
        rows.append({"stage": name, "median s": f"{seconds[name]:.3f}",
                     "% of total": f"{100 * seconds[name] / seconds['total']:.0f}", "GFLOP": f"{gflop:.1f}",
                     "GFLOP/s": f"{gflop / seconds[name]:.0f}" if seconds[name] > 0 else "",
                     "% of matmul peak": f"{100 * gflop / seconds[name] / peak:.0f}" if seconds[name] > 0 else ""})
    return rows


# ----------------------------------------------------------------------------- training step


def _training_batches(shared: Path) -> Tuple[List[Dict], List[Tensor], List[Dict[str, Tensor]]]:
    """Two annotated coco-mini photos: as this project's inputs, and as torchvision's (images, targets)."""
    from .data import DatasetCatalog, DatasetMapper

    cfg = golden_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (800,)
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.INPUT.MASK_FORMAT = "bitmask"  # torchvision's targets are bitmasks
    records = [r for r in DatasetCatalog.get("coco_mini_train") if r["annotations"]][:2]
    mapper = DatasetMapper(cfg, is_train=True)
    ours = [mapper(dict(r)) for r in records]
    tv_images, tv_targets = [], []
    for r, x in zip(records, ours):
        image = _load_image(Path(r["file_name"]))
        tv_images.append(image.flip(0).float() / 255.0)
        inst = x["instances"]
        # Same boxes and classes at the original size; torchvision resizes to 800 itself.
        scale = torch.tensor([r["width"] / x["image"].shape[2], r["height"] / x["image"].shape[1]] * 2)
        masks = torch.nn.functional.interpolate(inst.gt_masks.tensor[None].float(), size=(r["height"], r["width"]))[0]
        tv_targets.append({"boxes": inst.gt_boxes.tensor * scale, "labels": inst.gt_classes + 1,
                           "masks": masks.to(torch.uint8)})
    return ours, tv_images, tv_targets


def _train_step_times(shared: Path, warmup: int, rounds: int, device: str = "cpu") -> Dict[str, List[float]]:
    from .modeling import build_model

    cfg = golden_cfg()
    ours_inputs, tv_images, tv_targets = _training_batches(shared)
    torch.manual_seed(0)
    ours = build_model(cfg).train().to(device)  # moves its inputs to its device itself
    tv = _torchvision_model(train=True, device=device)
    tv_images = [image.to(device) for image in tv_images]
    tv_targets = [{k: v.to(device) for k, v in t.items()} for t in tv_targets]
    opt_ours = torch.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    opt_tv = torch.optim.SGD([p for p in tv.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def step(model, opt, *args) -> float:
        losses = model(*args)
        total = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return float(total.detach())

    candidates = [_Wrapped("torchvision train step", lambda: step(tv, opt_tv, tv_images, tv_targets) and None),
                  _Wrapped("ours train step", lambda: step(ours, opt_ours, ours_inputs) and None)]
    times: Dict[str, List[float]] = {c.name: [] for c in candidates}
    for _ in range(warmup):
        for c in candidates:
            c.call()
    for r in range(rounds):
        for c in (candidates if r % 2 == 0 else candidates[::-1]):
            start = time.perf_counter()
            c.call()
            times[c.name].append(time.perf_counter() - start)
    return times


# ----------------------------------------------------------------------------- report


INFERENCE_CANDIDATES = ["torchvision eager", "torchvision scripted", "torchvision ONNX Runtime",
                        "torchvision OpenVINO", "detectron2 eager", "ours eager", "ours scripted",
                        "ours exported (Python)", "ours C++", "ours fast fp32", "ours fast bf16"]


def _table(rows: List[Dict], header: List[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(h, "")) for h in header) + " |")
    return "\n".join(lines)


def _plan_line(shared: Path, device: str) -> Tuple[str, Dict]:
    """The plan the fast candidates run (measured now, or read from the cache) as one line and a dict."""
    from .modeling.fast_inference import prepare_for_inference
    from .modeling.inference_plan import describe

    plan = prepare_for_inference(golden_model(shared, device)).inference_plan
    timings = ", ".join(f"{k} {v / 1000:.2f} s" for k, v in sorted(plan.timings_ms.items(), key=lambda kv: kv[1]))
    line = f"Fast inference {describe(plan)}" + (f"; candidates (sample 800x1067): {timings}" if timings else "")
    return line, {**plan.to_dict(), "rewrites": None}


def _caps_below(flags: List[str]) -> List[str]:
    """The ISA caps to rerun under (--isa-caps): AVX2 on a CPU with AVX-512."""
    return ["avx2"] if "avx512f" in flags else []


def _child_argv(args: argparse.Namespace, output: Path) -> List[str]:
    """The command line of this run (less --isa-caps) writing to `output`."""
    argv = ["--shared", args.shared, "--threads", str(args.threads), "--device", args.device, "--warmup",
            str(args.warmup), "--rounds", str(args.rounds), "--cpp", args.cpp, "--output", str(output)]
    argv += ["--image", args.image] if args.image else []
    argv += ["--plan", args.plan] if args.plan else []
    argv += ["--skip", *args.skip] if args.skip else []
    for flag in ("skip_training", "skip_stages", "no_memory", "keep_freed_memory"):
        argv += ["--" + flag.replace("_", "-")] if getattr(args, flag) else []
    return argv


def _run_capped(cap: str, args: argparse.Namespace, output: Path) -> Optional[str]:
    """Reruns this benchmark in a child under ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA = cap; its bench.md."""
    env = dict(os.environ, ATEN_CPU_CAPABILITY=cap, ONEDNN_MAX_CPU_ISA=cap.upper())
    out = output / f"cap-{cap}"
    run = subprocess.run([sys.executable, "-m", "mrcnn_plugin.bench", *_child_argv(args, out)], env=env, text=True)
    if run.returncode != 0:
        print(f"[bench] the run under the {cap} cap failed (exit {run.returncode})")
        return None
    return (out / "bench.md").read_text()


def run(args: argparse.Namespace) -> Dict:
    torch.set_num_threads(args.threads)
    if args.plan:
        # The fast candidates, the exported model and the memory children all read it.
        os.environ["MRCNN_INFERENCE_PLAN"] = args.plan
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailableError("--device cuda: no CUDA GPU is available on this machine")
    if args.keep_freed_memory:
        if not keep_freed_memory():
            raise ValueError("--keep-freed-memory needs glibc's malloc; this C library is not glibc")
        os.environ["GLIBC_TUNABLES"] = GLIBC_TUNABLES_KEEP_FREED_MEMORY  # the C++ candidate's too
    shared = Path(args.shared)
    if not os.getenv("MRCNN_COCO_MINI") and (shared / "data" / "coco-mini").is_dir():
        # The training step's coco-mini photos come from the same --shared folder.
        os.environ["MRCNN_COCO_MINI"] = str(shared / "data" / "coco-mini")
    image_file = Path(args.image) if args.image else shared / _DEFAULT_IMAGE
    image = _load_image(image_file)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    from .utils.cpu import bf16_native, cpu_name, isa_flags

    report: Dict = {"cpu": cpu_name(), "isa_flags": isa_flags(), "torch": torch.__version__,
                    "isa_caps": {v: os.environ.get(v, "") for v in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")},
                    "threads": args.threads, "device": device, "image": image_file.name,
                    "allocator": "keeps freed memory" if args.keep_freed_memory else "default",
                    "image_size": [int(image.shape[1]), int(image.shape[2])], "rounds": args.rounds}
    report["matmul_peak_gflops"] = {"fp32": matmul_peak_gflops(torch.float32, device=device),
                                    "bf16": matmul_peak_gflops(torch.bfloat16, device=device)}
    flops, input_size, stage_flops = _network_flops(shared, image)
    report["network_input_size"] = list(input_size)
    report["gflop_per_image"] = flops / 1e9
    names = [n for n in INFERENCE_CANDIDATES if n not in set(args.skip)]
    if any(n in names for n in ("ours fast fp32", "ours exported (Python)", "ours C++")):
        report["plan_line"], report["plan"] = _plan_line(shared, device)
    if "ours fast bf16" in names and not bf16_native(device):
        # prepare_for_inference would run float32 (and warn): the row would repeat fast fp32.
        print(f"[bench] skipping ours fast bf16: {report['cpu']} has no native bfloat16 (AVX512-BF16 or AMX)")
        names.remove("ours fast bf16")
    with tempfile.TemporaryDirectory() as tmp:
        unavailable: Dict[str, str] = {}
        candidates = _candidates(names, shared, image, Path(tmp), Path(args.cpp) if args.cpp else None,
                                 args.threads, device, unavailable)
        report["unavailable"] = unavailable
        times = _round_robin(candidates, args.warmup, args.rounds)
    base = statistics.median(times["torchvision eager"]) if "torchvision eager" in times else float("nan")
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        peak = report["matmul_peak_gflops"]["bf16" if "bf16" in name else "fp32"]
        gflops = flops / 1e9 / median
        # Not measured: the C++ program (another process) and the peers (each child would export again).
        memory = float("nan") if args.no_memory or name == "ours C++" or name in PEERS else _peak_memory_child(
            name, shared, str(image_file), args.threads, device)
        rows.append({"candidate": name, "median s": f"{median:.3f}", "vs torchvision": f"{median / base:.2f}",
                     "GFLOP/s": f"{gflops:.0f}", "% of matmul peak": f"{100 * gflops / peak:.0f}",
                     "peak memory MiB": f"{memory:.0f}", "_median": median, "_times": values})
    report["inference"] = rows
    _write(report, input_size, args, output)
    if not args.skip_stages:
        report["stages"] = _stage_rows(shared, image, stage_flops, report["matmul_peak_gflops"]["fp32"], args.rounds,
                                       device)
        _write(report, input_size, args, output)
    if not args.skip_training:
        train_times = _train_step_times(shared, 1, max(3, args.rounds // 2), device)
        tv_step = statistics.median(train_times["torchvision train step"])
        report["training"] = [{"candidate": k, "median s": f"{statistics.median(v):.3f}",
                               "vs torchvision": f"{statistics.median(v) / tv_step:.2f}", "_times": v}
                              for k, v in train_times.items()]
        _write(report, input_size, args, output)
    if args.isa_caps and device == "cpu":
        for cap in _caps_below(report["isa_flags"]):
            capped = _run_capped(cap, args, output)
            if capped is not None:
                report.setdefault("capped", {})[cap] = capped
        _write(report, input_size, args, output)
    return report


def _write(report: Dict, input_size: Tuple[int, int], args: argparse.Namespace, output: Path) -> None:
    """Prints the tables and writes bench.md and bench.json (again after each part)."""
    rows = report["inference"]
    header = ["candidate", "median s", "vs torchvision", "GFLOP/s", "% of matmul peak", "peak memory MiB"]
    where = f"{args.threads} threads" if report["device"] == "cpu" else f"device {report['device']}"
    caps = {k: v for k, v in report.get("isa_caps", {}).items() if v}
    md = [f"CPU {report['cpu']} (ISA flags: {' '.join(report['isa_flags']) or 'none of note'}), "
          f"torch {report['torch']}" + (f", capped: {' '.join(f'{k}={v}' for k, v in caps.items())}" if caps else "")
          + ".",
          f"Input {report['image']} {report['image_size'][1]}x{report['image_size'][0]} -> network "
          f"{input_size[1]}x{input_size[0]}, {report['gflop_per_image']:.0f} GFLOP per image (fvcore x2), "
          f"{where}, {args.rounds} interleaved rounds after {args.warmup} warm-up, "
          f"malloc {'keeping freed memory (--keep-freed-memory)' if args.keep_freed_memory else 'as by default'}.",
          f"Matrix-product peak in this run: fp32 {report['matmul_peak_gflops']['fp32']:.0f} GFLOP/s, "
          f"bf16 {report['matmul_peak_gflops']['bf16']:.0f} GFLOP/s."]
    if "plan_line" in report:
        md.append(report["plan_line"] + ".")
    from .bench_peers import runtime_versions

    if runtime_versions():
        md.append("Peer runtimes: " + ", ".join(f"{k} {v}" for k, v in runtime_versions()) + ".")
    md += ["", _table(rows, header)]
    for name, why in report.get("unavailable", {}).items():
        md.append(f"\n{name}: not run ({why}).")
    if "stages" in report:
        md += ["", "Where the fast fp32 time goes (forward hooks; a stage includes the stages nested in it; "
               "total includes resizing and mask pasting):", "",
               _table(report["stages"], ["stage", "median s", "% of total", "GFLOP", "GFLOP/s", "% of matmul peak"])]
    if "training" in report:
        md += ["", "Training step (batch 2, forward + backward + SGD step):", "",
               _table(report["training"], ["candidate", "median s", "vs torchvision"])]
    for cap, capped in report.get("capped", {}).items():
        md += ["", f"The same run under the {cap} cap (ATEN_CPU_CAPABILITY={cap}, ONEDNN_MAX_CPU_ISA={cap.upper()}; "
               "an approximation of an AVX2-only CPU: caches and cores stay this machine's):", "", capped]
    text = "\n".join(md)
    print(text)
    (output / "bench.md").write_text(text + "\n")
    (output / "bench.json").write_text(json.dumps(report, indent=2, default=float))
    print(f"\nwrote {output / 'bench.md'} and {output / 'bench.json'}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shared", default=str(_DEFAULT_SHARED),
                        help="folder with golden/weights_rule.py and data/coco-mini (default ../shared)")
    parser.add_argument("--image", default=None, help=f"benchmark photo (default SHARED/{_DEFAULT_IMAGE})")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where every candidate runs (the photo starts in host memory); cuda needs a GPU")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed calls per candidate (scripted models optimise their graph on the first two)")
    parser.add_argument("--rounds", type=int, default=5, help="timed interleaved rounds")
    parser.add_argument("--cpp", default=str(_REPO / "build" / "cpp" / "mrcnn_infer"), help="C++ program")
    parser.add_argument("--skip", nargs="*", default=[], choices=INFERENCE_CANDIDATES, metavar="CANDIDATE",
                        help="candidates to leave out")
    parser.add_argument("--skip-training", action="store_true", help="no training-step comparison")
    parser.add_argument("--skip-stages", action="store_true", help="no per-stage time of the fast fp32 model")
    parser.add_argument("--no-memory", action="store_true", help="no per-candidate memory measurement")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="every candidate (and the training step) runs with glibc's malloc keeping freed "
                             "memory, so no inference faults in fresh pages (utils/allocator.py); memory is "
                             "still measured with the default malloc")
    parser.add_argument("--plan", default=None, metavar="auto|fixed|none|FILE",
                        help="the fast inference plan of the fast and exported candidates (default: "
                             "$MRCNN_INFERENCE_PLAN or auto, measured here and cached)")
    parser.add_argument("--isa-caps", action="store_true",
                        help="also rerun under the ISA caps below this CPU's own (AVX2 on an AVX-512 CPU): "
                             "ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA, tables side by side in bench.md")
    parser.add_argument("--output", default="outputs/bench", help="writes bench.json and bench.md here")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="mrcnn bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
