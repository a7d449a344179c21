"""`mrcnn bench`'s measuring parts: the round-robin interleaves candidates and alternates who goes
first, the C++ latency is read from the program's own per-image line, the matrix-product peak is a
plausible positive rate. (The benchmark's numbers themselves are printed by `mrcnn bench`, not
asserted in tests.)"""
import subprocess
from pathlib import Path

import torch

from mrcnn_plugin import bench


def test_round_robin_interleaves_and_alternates_order():
    """Every round calls each candidate once; odd rounds run them in reverse order; warm-up calls
    are not timed."""
    calls = []
    candidates = [bench._Wrapped(name, (lambda name=name: calls.append(name) or 0)) for name in "abc"]
    times = bench._round_robin(candidates, warmup=1, rounds=2)
    assert calls == list("abc") + list("abc") + list("cba")
    assert {k: len(v) for k, v in times.items()} == {"a": 2, "b": 2, "c": 2}


def test_cpp_latency_reads_the_last_image_line(tmp_path, monkeypatch):
    """The C++ candidate's time is the third image's in-program latency (process start and the two
    warm-up inferences excluded), parsed from mrcnn_infer's "file: WxH, N detections, T ms" lines."""
    stdout = "a.png: 640x480, 100 detections, 9000.0 ms\na.png: 640x480, 100 detections, 4100.5 ms\n" \
             "a.png: 640x480, 100 detections, 3950.25 ms\n"
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 0, stdout=stdout, stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    seconds = bench._cpp_latency(Path("mrcnn_infer"), Path("model.ts"), Path("a.png"), threads=2)
    assert abs(seconds - 3.95025) < 1e-9
    assert seen["cmd"][-3:] == ["a.png"] * 3 and seen["cmd"][seen["cmd"].index("--threads") + 1] == "2"
    assert seen["cmd"][seen["cmd"].index("--device") + 1] == "cpu"


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch, tmp_path):
    """`mrcnn bench --device cuda` on a machine without a GPU stops at once with a message saying so
    (before any model is built)."""
    import pytest

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    from mrcnn_plugin.utils.errors import DeviceUnavailableError

    with pytest.raises(DeviceUnavailableError, match="no CUDA GPU"):
        bench.main(["--device", "cuda", "--output", str(tmp_path)])


def test_matmul_peak_is_positive():
    """The fp32 peak of a small product is a positive, finite GFLOP/s figure."""
    peak = bench.matmul_peak_gflops(torch.float32, n=256, reps=2)
    assert 0 < peak < 1e6


def test_stage_times_attribute_each_stage_its_own_time(monkeypatch):
    """stage_times charges each hooked submodule the clock time between its forward's start and end,
    nested stages included in their parent, repeated calls summed within one call; "total" is the
    whole call. A fake clock makes the times exact."""
    clock = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])

    class Tick(torch.nn.Module):
        def __init__(self, seconds):
            super().__init__()
            self.seconds = seconds

        def forward(self, x):
            clock[0] += self.seconds
            return x

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pooler = Tick(0.5)

        def forward(self, x):
            clock[0] += 0.25
            return self.pooler(self.pooler(x))  # the pooler runs twice per call

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = Tick(2.0)
            self.head = Head()

        def forward(self, x):
            clock[0] += 0.125  # work outside any stage (resizing, pasting)
            return self.head(self.backbone(x))

    model = Detector()
    seconds = bench.stage_times(model, lambda: model(torch.zeros(1)), rounds=3,
                                stages=("backbone", "head", "head.pooler"))
    assert seconds == {"backbone": 2.0, "head": 1.25, "head.pooler": 1.0, "total": 3.375}
    # the hooks are removed afterwards
    assert not model.backbone._forward_hooks and not model.backbone._forward_pre_hooks


def test_memory_is_measured_with_the_default_malloc(monkeypatch):
    """With --keep-freed-memory the bench process (and the C++ program it starts) has GLIBC_TUNABLES
    set; the memory child must not inherit it, or freed memory kept from warm-up would hide the
    inference's peak."""
    import subprocess

    seen = {}

    def fake_run(cmd, capture_output, text, env):
        seen["env"] = env
        return subprocess.CompletedProcess(cmd, 0, stdout="12.5\n", stderr="")

    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_max=0")
    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    assert bench._peak_memory_child("ours eager", bench._DEFAULT_SHARED, "x.png", 2) == 12.5
    assert "GLIBC_TUNABLES" not in seen["env"] and seen["env"].get("PATH") == bench.os.environ.get("PATH")
