"""The dtype rule (`auto`) for each kind of machine, given its facts rather than read from this one."""
import pytest

from synthpref.models.precision import auto_dtype, cpu_flags, native_bf16_cpu
from synthpref.training.group import common_dtype

AVX2_ONLY = "fpu sse sse2 ssse3 sse4_1 sse4_2 fma avx f16c avx2 bmi2".split()
AVX512_NO_BF16 = AVX2_ONLY + "avx512f avx512dq avx512bw avx512vl avx512_vnni".split()
AVX512_BF16 = AVX512_NO_BF16 + ["avx512_bf16"]
SAPPHIRE_RAPIDS = AVX512_BF16 + "amx_tile amx_int8 amx_bf16".split()


@pytest.mark.parametrize("flags, expected", [
    (AVX2_ONLY, "float32"), (AVX512_NO_BF16, "float32"), (AVX512_BF16, "bfloat16"), (SAPPHIRE_RAPIDS, "bfloat16"),
    (["amx_bf16"], "bfloat16"), ([], "float32"),
])
def test_auto_on_each_kind_of_cpu(flags, expected):
    assert auto_dtype("auto", flags=flags) == expected
    assert auto_dtype("auto", flags=flags, training=True) == expected


def test_an_explicit_dtype_is_kept_whatever_the_hardware():
    assert auto_dtype("float32", flags=AVX512_BF16) == "float32"
    assert auto_dtype("bfloat16", flags=AVX2_ONLY) == "bfloat16"
    assert auto_dtype("float16", gpu=True, gpu_bf16=True) == "float16"


def test_auto_on_gpus():
    assert auto_dtype("auto", gpu=True, gpu_bf16=True) == "bfloat16"
    assert auto_dtype("auto", gpu=True, gpu_bf16=False) == "float16"               # serving on a V100
    assert auto_dtype("auto", gpu=True, gpu_bf16=False, training=True) == "float32"  # no loss scaling: fp32
    assert auto_dtype("auto", flags=AVX512_BF16, gpu=True, gpu_bf16=False) == "float16"  # the GPU decides


def test_cpu_flags_read_from_cpuinfo_text():
    text = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16\n\nprocessor\t: 1\n"
    assert cpu_flags(text) == {"fpu", "avx2", "avx512_bf16", "amx_bf16"}
    assert native_bf16_cpu(cpu_flags(text))
    assert not native_bf16_cpu(cpu_flags("flags : fpu avx2 avx512f\n"))
    assert cpu_flags("no flags here\n") == frozenset()


def test_trainer_ranks_share_one_dtype():
    assert common_dtype(["bfloat16", "bfloat16"]) == "bfloat16"
    assert common_dtype(["bfloat16", "float32"]) == "float32"     # bf16 only where every rank has it
    assert common_dtype(["float32"]) == "float32"


def test_a_part_below_its_stored_precision_gets_one_sentence(tmp_path):
    from synthpref.models.precision import lower_precision_note
    from synthpref.models.tiny import build_tiny_model
    model = str(build_tiny_model(tmp_path / "m", seed=0))          # stored in float32
    note = lower_precision_note({"sampler": "bfloat16", "judge:j": "bfloat16", "trainer": "float32"},
                                {"sampler": model, "judge:j": model, "trainer": model})
    assert note.startswith("note: running sampler, judge:j in bfloat16 (stored as float32)") and "trainer" not in note
    assert lower_precision_note({"sampler": "float32"}, {"sampler": model}) is None
    assert lower_precision_note({"sampler": "bfloat16"}, {"sampler": str(tmp_path / "missing")}) is None
