"""Which dtype each engine and trainer runs, and the rule for numbers that cross between them.

`auto` picks bf16 only where the hardware computes in it natively: a GPU with bf16 (Ampere and newer),
or a CPU with AVX512-BF16 or AMX, where STACK.md measured bf16 matmuls at 2.3x fp32's speed. Elsewhere
on CPU bf16 is emulated and slower, so `auto` is fp32 there; a GPU without bf16 serves in fp16 and
trains in fp32 (fp16 training needs loss scaling). `auto_dtype` is a pure function of the hardware
facts given to it, so the rule is tested for every kind of CPU on any machine; each engine and trainer
rank resolves it on its own node (a cluster's nodes need not match the driver's) and reports the dtype
it actually runs, which every job records.

Mixed precision across roles, the rule the project follows: a number is compared or combined only with
numbers computed in the same dtype by the same kind of code. Samplers may run bf16 while trainers run
fp32; so every log-probability that enters a loss, a KL estimate or an importance ratio is computed by
the trainer ranks (old, new and reference log-probs alike, from the token ids the engine produced).
Engine log-probs are recorded with the samples but used only where a method needs the behaviour
policy's own (a truncated importance-sampling correction for the engine-vs-trainer mismatch).
"""
from __future__ import annotations

import functools
from typing import Iterable

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
DTYPES = ("float32", "bfloat16", "float16")


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU feature flags of this machine (the `flags` line of /proc/cpuinfo; empty where unreadable)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as fh:
                cpuinfo = fh.read()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16_cpu(flags: Iterable[str]) -> bool:
    """True when the CPU has bf16 matrix instructions (AVX512-BF16 or AMX)."""
    return any(f in set(flags) for f in BF16_CPU_FLAGS)


def auto_dtype(setting: str, *, flags: Iterable[str] = (), gpu: bool = False, gpu_bf16: bool = False,
               training: bool = False) -> str:
    """The dtype a component runs for `setting` on the hardware described (see the module docstring)."""
    if setting != "auto":
        return setting
    if gpu:
        return "bfloat16" if gpu_bf16 else ("float32" if training else "float16")
    return "bfloat16" if native_bf16_cpu(flags) else "float32"


def resolve_dtype(setting: str, on_gpu: bool, training: bool = False) -> str:
    """`auto_dtype` for the hardware of the process that calls it."""
    gpu_bf16 = False
    if on_gpu:
        import torch
        gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return auto_dtype(setting, flags=() if on_gpu else cpu_flags(), gpu=on_gpu, gpu_bf16=gpu_bf16, training=training)


def machine() -> dict:
    """What a benchmark prints about the CPU it ran on: model, the flags that decide dtype and speed,
    and the dtype `auto` gives a CPU engine here."""
    try:
        with open("/proc/cpuinfo") as fh:
            cpuinfo = fh.read()
    except OSError:
        cpuinfo = ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    flags = cpu_flags(cpuinfo)
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", *BF16_CPU_FLAGS) if f in flags]
    return {"cpu": model or "unknown", "flags": shown, "auto_dtype": auto_dtype("auto", flags=flags)}


def machine_line(info: dict) -> str:
    return f"CPU: {info['cpu']} (flags: {' '.join(info['flags']) or 'none of avx2/avx512'}); auto dtype on CPU: {info['auto_dtype']}"


def dtype_name(dtype) -> str:
    """"bfloat16" for torch.bfloat16 or "torch.bfloat16" (what engines and models report)."""
    return str(dtype).removeprefix("torch.")


def describe(dtypes: dict[str, str]) -> str:
    """One line for a summary: "sampler bfloat16, judge:tiny bfloat16, trainer float32"."""
    return ", ".join(f"{name} {dtype}" for name, dtype in dtypes.items())


_BITS = {"float32": 32, "float64": 64, "bfloat16": 16, "float16": 16}


@functools.lru_cache(maxsize=64)
def stored_dtype(model: str) -> str | None:
    """The dtype a model's weights are stored in, from its config (None when it does not say); the local
    copy or cache first (the workers have fetched it by now), the hub only if that fails."""
    from transformers import AutoConfig
    config = None
    for local_only in (True, False):
        try:
            config = AutoConfig.from_pretrained(model, local_files_only=local_only)
            break
        except Exception:  # not cached / unreadable: try the hub once, else nothing to compare with
            continue
    if config is None:
        return None
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return dtype_name(stored) if stored else None


def lower_precision_note(dtypes: dict[str, str], models: dict[str, str]) -> str | None:
    """One sentence for the terminal when parts run below the precision their weights are stored in
    (e.g. `dtype: auto` choosing bf16 for fp32 weights on an AVX512-BF16 CPU); None when none do."""
    lowered: dict[str, list[str]] = {}
    for part, running in dtypes.items():
        stored = stored_dtype(models[part]) if part in models else None
        if stored and _BITS.get(running, 32) < _BITS.get(stored, 32):
            lowered.setdefault(f"{running} (stored as {stored})", []).append(part)
    if not lowered:
        return None
    parts = "; ".join(f"{', '.join(names)} in {how}" for how, names in lowered.items())
    return (f"note: running {parts}; set the engine's or train's dtype to float32 to keep full precision "
            f"(dtype: auto picks bf16 where the hardware has it)")
