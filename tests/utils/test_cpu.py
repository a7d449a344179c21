"""utils/cpu.py: the CPU's name, its ISA flags and whether bfloat16 is native, read from
/proc/cpuinfo (faked here with the lines of an AVX2-only and an AMX CPU)."""
import pytest

from mrcnn_plugin.utils import cpu

_ZEN3 = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx fma avx2 bmi2\n"
_SAPPHIRE = "model name\t: Intel(R) Xeon(R) Platinum 8481C\nflags\t\t: avx avx2 fma avx512f avx512bw " \
            "avx512vl avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8\n"


@pytest.fixture
def fake_cpuinfo(monkeypatch):
    def use(text):
        monkeypatch.setattr(cpu, "_cpuinfo", lambda: text)
    return use


def test_avx2_only_cpu_has_no_native_bf16(fake_cpuinfo):
    """An AVX2-only EPYC: named, its vector flags listed in order, bfloat16 not native on CPU but
    native on a CUDA device."""
    fake_cpuinfo(_ZEN3)
    assert cpu.cpu_name() == "AMD EPYC 7B13"
    assert cpu.isa_flags() == ["avx", "avx2", "fma"]
    assert not cpu.bf16_native("cpu")
    assert cpu.bf16_native("cuda")


def test_amx_cpu_has_native_bf16(fake_cpuinfo):
    fake_cpuinfo(_SAPPHIRE)
    assert "amx_bf16" in cpu.isa_flags() and cpu.bf16_native("cpu")


def test_this_machine_is_described():
    """On the machine running the tests: a non-empty name and flags drawn from the known list."""
    assert cpu.cpu_name()
    assert set(cpu.isa_flags()) <= set(cpu._ISA_FLAGS)


def test_channels_last_rule_follows_avx512_and_the_aten_cap(fake_cpuinfo, monkeypatch):
    """Channels-last is chosen on an AVX-512 CPU, not on an AVX2-only one, nor under an AVX2 cap."""
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    fake_cpuinfo(_ZEN3)
    assert not cpu.channels_last_pays()
    fake_cpuinfo(_SAPPHIRE)
    assert cpu.channels_last_pays()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert not cpu.channels_last_pays()


def test_an_isa_cap_below_bf16_makes_it_emulated(fake_cpuinfo, monkeypatch):
    """On an AMX CPU, ONEDNN_MAX_CPU_ISA=AVX2 (or AVX512_CORE) leaves oneDNN without its bfloat16
    kernels: bf16 counts as not native; an AMX cap keeps it."""
    fake_cpuinfo(_SAPPHIRE)
    for cap, native in (("AVX2", False), ("avx512_core", False), ("AVX512_CORE_AMX", True), ("", True)):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert cpu.bf16_native("cpu") == native, cap
