"""What this CPU offers, read once: its model name, the vector ISA flags that decide which
kernels are fast, and whether bfloat16 arithmetic is native (not emulated) here."""
import functools
from pathlib import Path
from typing import List

__all__ = ["cpu_name", "isa_flags", "bf16_native", "channels_last_pays"]

# The flags (as /proc/cpuinfo spells them) that oneDNN's and ATen's kernel choice depends on.
_ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
              "amx_tile", "amx_bf16", "amx_int8")
# bfloat16 runs at full rate only with these; elsewhere oneDNN emulates it (measured 6.6x slower
# than float32 on an AVX2-only AMD EPYC, Zen 3).
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: nothing known
        return ""


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC 7B13", ...), or the platform's processor string."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or "unknown CPU"


def isa_flags() -> List[str]:
    """The vector ISA flags of _ISA_FLAGS this CPU has, in that order."""
    flags = set()
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return [f for f in _ISA_FLAGS if f in flags]


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) that leave out its bfloat16 instructions.
_CAPS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")


def bf16_native(device: str = "cpu") -> bool:
    """True where bfloat16 matrix arithmetic is native: a CUDA device, or a CPU with
    AVX512-BF16 or AMX, unless ONEDNN_MAX_CPU_ISA caps oneDNN below them (`mrcnn bench
    --isa-caps`: bf16 under an AVX2 cap ran 7.2x torchvision's fp32 time, emulated)."""
    import os

    if device.startswith("cuda"):
        return True
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _CAPS_WITHOUT_BF16:
        return False
    return any(f in isa_flags() for f in _BF16_FLAGS)


def channels_last_pays() -> bool:
    """Whether the fast inference mode lays its convolutions out channels-last on this CPU: on
    AVX-512 CPUs oneDNN's NHWC kernels and the box head's PooledLinear were measured faster (Zen 4,
    Xeon), on an AVX2-only CPU (Zen 3) slower. A rule drawn from the CPUs measured so far, not a
    measurement on this one; ATEN_CPU_CAPABILITY set below avx512 counts as AVX2."""
    import os

    capped = os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in ("default", "avx2")
    return "avx512f" in isa_flags() and not capped
