"""The inference plan: which of the fast mode's rewrites run, chosen by measurement on the
machine that runs the model, and where that was measured.

A plan is a few switches (`InferencePlan`): channels-last weights, the box head's fc1 as a
convolution, NNPACK Winograd per stage (by the stage's path: "backbone",
"proposal_generator.rpn_head", "roi_heads.mask_head", ...), bf16. `apply_plan` sets them on
a model built by `fast_inference.build_switchable`, eager or scripted, through plain module
attributes (`use_winograd`, `pooled_as_conv`) and the layout of the 4-d weights: the C++
library does the same on a loaded model.ts (export/cpp/src/plan.cpp).

`tune_plan` measures: the plain plan (every switch off) and the fixed rule first, then one
switch at a time flipped on the best so far, kept when it is faster. So the plan chosen is
never slower than the plain one as measured, and costs 1 + 1 + (switches) timings rather
than every combination. The machine is part of the plan (`machine_key`): CPU model, ISA
flags and caps, intra-op threads, torch version, device. A plan measured elsewhere is
re-measured, never silently applied; plans are cached on disk under that key
(`MRCNN_PLAN_CACHE`, default ~/.cache/mrcnn_plugin/plans).
"""
import dataclasses
import hashlib
import json
import logging
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import torch
from torch import Tensor, nn

from ..utils import cpu as _cpu

__all__ = ["InferencePlan", "PlanError", "machine_key", "mismatch", "apply_plan", "fixed_plan", "tune_plan",
           "resolve_plan", "plan_stages", "sample_for_sizes", "nnpack_usable", "describe", "default_plan_spec", "synthetic_sample",
           "cache_dir"]

logger = logging.getLogger(__name__)

PLAN_FORMAT = 1
_SPECS = ("auto", "fixed", "none")
# A flipped switch is kept only if it is at least this much faster: timing noise must not
# decide the plan.
_MIN_GAIN = 0.02


class PlanError(ValueError):
    """A plan file that is not JSON or not a plan: the message names the file."""


@dataclass
class InferencePlan:
    """The switches of the fast inference mode and where they were chosen.

    source: "auto" (measured), "cache" (measured before, read from the cache), "fixed"
    (the rule), "file", "none" (nothing rewritten). machine: `machine_key()` where it was
    measured. timings_ms: candidate label -> median milliseconds per call. rewrites: what
    `build_switchable` rewrote (fold_norms, pooled_linear, winograd, bf16, left).
    """
    channels_last: bool = False
    pooled_conv: bool = False
    winograd: List[str] = field(default_factory=list)
    bf16: bool = False
    source: str = "none"
    machine: Dict[str, Any] = field(default_factory=dict)
    timings_ms: Dict[str, float] = field(default_factory=dict)
    tuning_s: float = 0.0
    sample_hw: List[int] = field(default_factory=list)
    rewrites: Dict[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        """A short name of the switches: "plain", "cl+pc+wg(backbone,roi_heads.mask_head)", ..."""
        parts = [name for name, on in (("cl", self.channels_last), ("pc", self.pooled_conv), ("bf16", self.bf16))
                 if on]
        if self.winograd:
            parts.append("wg(" + ",".join(sorted(self.winograd)) + ")")
        return "+".join(parts) or "plain"

    def switches(self) -> Dict[str, Any]:
        return {"channels_last": self.channels_last, "pooled_conv": self.pooled_conv,
                "winograd": sorted(self.winograd), "bf16": self.bf16}

    def to_dict(self) -> Dict[str, Any]:
        return {"format": PLAN_FORMAT, **dataclasses.asdict(self), "winograd": sorted(self.winograd)}

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str = "plan") -> "InferencePlan":
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise PlanError(f"{where}: not an inference plan of format {PLAN_FORMAT}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - {"format"})
        if unknown:
            raise PlanError(f"{where}: unknown plan keys {unknown}")
        plan = cls(**{k: v for k, v in data.items() if k in names})
        if not isinstance(plan.winograd, list) or not all(isinstance(s, str) for s in plan.winograd):
            raise PlanError(f"{where}: 'winograd' must be a list of stage paths")
        return plan

    def save(self, path: Union[str, Path]) -> None:
        """Writes the plan as JSON, atomically (a reader never sees half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "InferencePlan":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such plan file")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PlanError(f"{path}: not a JSON plan ({e})") from None
        return cls.from_dict(data, str(path))


def machine_key(device: str = "cpu") -> Dict[str, Any]:
    """What a measured plan depends on: CPU model and ISA flags, the ISA caps set in the
    environment (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA), intra-op threads, torch version
    (without its build suffix) and device; the C++ library computes the same key."""
    key: Dict[str, Any] = {"cpu": _cpu.cpu_name(), "isa": _cpu.isa_flags(),
                           "isa_caps": {v: os.environ.get(v, "") for v in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")},
                           "threads": torch.get_num_threads(), "torch": torch.__version__.split("+")[0],
                           "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        key["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return key


def mismatch(plan: InferencePlan, device: str = "cpu") -> Optional[str]:
    """None if `plan` was measured on this machine (machine_key), else what differs, e.g.
    "threads: plan 4, here 2"."""
    here = machine_key(device)
    if not plan.machine:
        return "the plan names no machine"
    diffs = [f"{k}: plan {plan.machine.get(k)!r}, here {here[k]!r}" for k in here if plan.machine.get(k) != here[k]]
    return "; ".join(diffs) or None


def nnpack_usable() -> bool:
    """Whether Winograd can run here: this torch has NNPACK, and MRCNN_NO_NNPACK is not set (an
    operator's switch, also used by the tests to stand for a build without it)."""
    return torch._nnpack_available() and os.environ.get("MRCNN_NO_NNPACK", "") in ("", "0")


def _class_name(m: nn.Module) -> str:
    return getattr(m, "original_name", type(m).__name__)


def plan_stages(module: nn.Module) -> List[str]:
    """The Winograd stages of a switchable model, eager or scripted (sorted `plan_stage`s)."""
    return sorted({m.plan_stage for _, m in module.named_modules() if hasattr(m, "use_winograd")})


def _has_pooled(module: nn.Module) -> bool:
    return any(hasattr(m, "pooled_as_conv") for _, m in module.named_modules())


@torch.no_grad()
def apply_plan(module: nn.Module, plan: InferencePlan) -> None:
    """Sets `plan`'s switches on a switchable model, eager or scripted, in place: each
    WinogradConv2d's use_winograd (its plan_stage in plan.winograd, NNPACK usable), each
    PooledLinear's pooled_as_conv, and the layout of every 4-d weight: NCHW where NNPACK
    reads it or the matrix product views it, channels-last elsewhere if plan.channels_last."""
    winograd = set(plan.winograd) if nnpack_usable() else set()
    as_conv = plan.pooled_conv and plan.channels_last
    for _, m in module.named_modules():
        if hasattr(m, "use_winograd"):
            m.use_winograd = m.plan_stage in winograd
        if hasattr(m, "pooled_as_conv"):
            m.pooled_as_conv = as_conv
    for _, m in module.named_modules():
        if hasattr(m, "use_winograd") and m.use_winograd:
            channels_last = False
        elif hasattr(m, "pooled_as_conv"):
            channels_last = as_conv
        else:
            channels_last = plan.channels_last
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        for _, p in m.named_parameters(recurse=False):
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=fmt)


def fixed_plan(module: nn.Module, device: str = "cpu") -> InferencePlan:
    """The rule drawn from the CPUs measured so far: channels-last with the pooled convolution
    where `utils.cpu.channels_last_pays` (and on GPUs), Winograd in every stage."""
    cl = device != "cpu" or _cpu.channels_last_pays()
    return InferencePlan(channels_last=cl, pooled_conv=cl, winograd=plan_stages(module), source="fixed",
                         machine=machine_key(device))


def synthetic_sample(height: int = 800, width: int = 1067, seed: int = 0) -> Tensor:
    """A smooth random BGR image Tensor[3, height, width] uint8 (low-frequency noise, like a
    photo's features), the default input the tuner times."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(height // 64, 2), max(width // 64, 2), generator=g) * 255
    image = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return image[0].round().to(torch.uint8)


def sample_for_sizes(min_size_test: int, max_size_test: int) -> Tensor:
    """The synthetic sample at a config's test size: min_size_test high, 4:3 (a photo's shape)
    unless max_size_test is smaller."""
    width = min(int(round(min_size_test * 4 / 3)), max_size_test)
    return synthetic_sample(min_size_test, width)


def _time_ms(run: Callable[[], Any], repeats: int) -> float:
    run()  # warm-up: graph optimisation, oneDNN primitive caches, weight reorders
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def tune_plan(module: nn.Module, run: Callable[[], Any], device: str = "cpu", repeats: int = 2) -> InferencePlan:
    """Measures candidate plans on `module` (switchable, eager or scripted) by timing run(),
    which calls it on a sample, and leaves the fastest applied; returns it.

    Candidates: plain, the fixed rule, then from the best so far each switch flipped in turn
    (channels-last, pooled convolution if channels-last, Winograd per stage), kept if it is
    at least 2% faster. The plain plan is measured, so the result is never slower than it.
    """
    start = time.perf_counter()
    stages = plan_stages(module) if nnpack_usable() else []
    timings: Dict[str, float] = {}

    def measure(plan: InferencePlan) -> float:
        label = plan.label()
        if label not in timings:
            apply_plan(module, plan)
            timings[label] = round(_time_ms(run, repeats), 2)
        return timings[label]

    plain = InferencePlan()
    fixed = fixed_plan(module, device)
    fixed.winograd = stages
    best, best_ms = plain, measure(plain)
    if measure(fixed) < best_ms * (1 - _MIN_GAIN):
        best, best_ms = fixed, timings[fixed.label()]
    flips: List[Callable[[InferencePlan], Optional[InferencePlan]]] = [
        lambda p: dataclasses.replace(p, channels_last=not p.channels_last,
                                      pooled_conv=p.pooled_conv and not p.channels_last)]
    if _has_pooled(module):
        flips.append(lambda p: dataclasses.replace(p, pooled_conv=not p.pooled_conv) if p.channels_last else None)
    for stage in stages:
        flips.append(lambda p, s=stage: dataclasses.replace(
            p, winograd=sorted(set(p.winograd) ^ {s})))
    for flip in flips:
        candidate = flip(best)
        if candidate is None:
            continue
        ms = measure(candidate)
        if ms < best_ms * (1 - _MIN_GAIN):
            best, best_ms = candidate, ms
    chosen = dataclasses.replace(best, source="auto", machine=machine_key(device), timings_ms=timings,
                                 tuning_s=round(time.perf_counter() - start, 2))
    apply_plan(module, chosen)
    return chosen


def cache_dir() -> Path:
    """Where measured plans are kept: $MRCNN_PLAN_CACHE, else ~/.cache/mrcnn_plugin/plans."""
    env = os.environ.get("MRCNN_PLAN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mrcnn_plugin" / "plans"


def _cache_path(module: nn.Module, sample_hw: List[int], device: str) -> Path:
    """The cache file of this model (its parameter names and shapes), sample size and machine."""
    h = hashlib.sha256()
    for name, p in module.state_dict().items():
        h.update(f"{name}:{tuple(p.shape)};".encode())
    h.update(json.dumps({"sample": sample_hw, "machine": machine_key(device)}, sort_keys=True).encode())
    return cache_dir() / f"{h.hexdigest()[:20]}.json"


def default_plan_spec() -> str:
    """The plan `prepare_for_inference` uses when none is given: $MRCNN_INFERENCE_PLAN, else "auto"."""
    return os.environ.get("MRCNN_INFERENCE_PLAN", "") or "auto"


def _device_of(module: nn.Module) -> str:
    param = next(module.parameters(), None)
    return "cpu" if param is None else str(param.device)


def resolve_plan(fast: nn.Module, spec: Union[str, InferencePlan], sample: Optional[Tensor] = None,
                 cache: bool = True) -> InferencePlan:
    """The plan for `fast` (an eager switchable model) from a spec: "auto", "fixed", a path to a
    plan file, or an InferencePlan. Measures where needed ("auto" without a cached plan, or a
    plan measured on another machine: logged with what differs); leaves the plan applied."""
    device = _device_of(fast)
    if isinstance(spec, str) and spec == "fixed":
        plan = fixed_plan(fast, device)
        apply_plan(fast, plan)
        return plan
    if isinstance(spec, str) and spec not in _SPECS:
        if not Path(spec).is_file():
            raise ValueError(f"plan must be one of {', '.join(_SPECS)} or a plan file, got {spec!r} (no such file)")
        given: Optional[InferencePlan] = InferencePlan.load(spec)
        given.source = "file"
    elif isinstance(spec, InferencePlan):
        given = dataclasses.replace(spec)
    elif spec == "auto":
        given = None
    else:
        raise ValueError(f"plan must be one of {', '.join(_SPECS)}, a plan file or an InferencePlan, got {spec!r}")
    if given is not None:
        why = mismatch(given, device)
        if why is None:
            apply_plan(fast, given)
            return given
        logger.warning("The inference plan was measured on another machine (%s): measuring again here", why)
    if sample is None:
        sample = synthetic_sample()
    sample_hw = [int(sample.shape[-2]), int(sample.shape[-1])]
    path = _cache_path(fast, sample_hw, device)
    if cache and path.is_file():
        try:
            cached = InferencePlan.load(path)
        except PlanError as e:
            logger.warning("Ignoring a broken cached plan: %s", e)
        else:
            if mismatch(cached, device) is None:
                cached.source = "cache"
                apply_plan(fast, cached)
                return cached
    plan = tune_plan(fast, _timed_call(fast, sample.to(device)), device)
    plan.sample_hw = sample_hw
    if cache:
        try:
            plan.save(path)
        except OSError as e:  # a read-only home: the plan still applies, only not kept
            logger.warning("Could not cache the inference plan at %s: %s", path, e)
    return plan


def _timed_call(model: nn.Module, image: Tensor) -> Callable[[], Any]:
    """A call of model.inference on image with every detection kept (score threshold 0 while
    timing), so the mask and keypoint heads are timed at the most ROIs they will see."""
    predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    batch = [{"image": image, "height": image.shape[-2], "width": image.shape[-1]}]

    @torch.no_grad()
    def run() -> Any:
        thresh = getattr(predictor, "test_score_thresh", None)
        if thresh is not None:
            predictor.test_score_thresh = 0.0
        try:
            return model.inference(batch)
        finally:
            if thresh is not None:
                predictor.test_score_thresh = thresh

    return run


def describe(plan: InferencePlan) -> str:
    """One line for logs and `mrcnn bench`: the switches, how they were chosen, and where."""
    where = plan.machine.get("cpu", "?") if plan.machine else "?"
    text = f"plan {plan.label()} ({plan.source}"
    if plan.source in ("auto", "cache") and plan.timings_ms:
        text += f", best of {len(plan.timings_ms)} candidates"
        if plan.tuning_s:
            text += f" measured in {plan.tuning_s:.1f} s"
    text += f"; on {where}, {plan.machine.get('threads', '?')} threads)" if plan.machine else ")"
    return text
