"""What machine a benchmark ran on, and how fast its float32 matrix multiply can go.

Timings are only comparable within one run on one machine, so every benchmark records the CPU, the
instruction-set flags that decide which kernels run (AVX2, AVX-512, BF16, AMX), the threads, and a
measured float32 matmul peak to express achieved throughput as a fraction of the hardware.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

FLAGS_THAT_MATTER = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_info() -> dict:
    """CPU model name, the flags that decide kernel choice, logical cores and the oneDNN ISA cap.

    Returns:
        `{"name", "flags", "logical_cpus", "onednn_max_isa", "machine"}`; `flags` maps each of
        `FLAGS_THAT_MATTER` to whether `/proc/cpuinfo` lists it (all False where it is unreadable).
    """
    name, flags, family = platform.processor() or platform.machine(), set(), None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            name = value.strip()
        elif key.strip() == "cpu family" and value.strip():
            family = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    return {
        "name": name,
        # Vendors reuse model names across generations (AMD EPYC: family 25 is Zen 3/4, 26 is Zen 5).
        "family": family,
        "machine": platform.machine(),
        "flags": {f: f in flags for f in FLAGS_THAT_MATTER},
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        # ONEDNN_MAX_CPU_ISA=AVX2 makes an AVX-512 machine run the kernels an AVX2-only CPU runs.
        "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
    }


def describe_cpu(info: dict) -> str:
    """One line such as "AMD EPYC 7B13 (family 25), 2 CPUs, AVX2 yes, AVX-512 no, BF16 no"."""
    f = info["flags"]
    parts = [
        info["name"] + (f" (family {info['family']})" if info.get("family") else ""),
        f"{info['usable_cpus'] or info['logical_cpus']} CPUs",
        f"AVX2 {'yes' if f['avx2'] else 'no'}",
        f"AVX-512 {'yes' if f['avx512f'] else 'no'}",
        f"BF16 {'yes' if f['avx512_bf16'] or f['amx_bf16'] else 'no'}",
    ]
    if f["amx_tile"]:
        parts.append("AMX yes")
    if info["onednn_max_isa"] != "default":
        parts.append(f"oneDNN capped at {info['onednn_max_isa']}")
    return ", ".join(parts)


def matmul_peak_gflops(n: int = 2048, repeats: int = 8) -> float:
    """Best float32 GFLOP/s of an `n x n` TensorFlow matmul on this machine (all its threads).

    TensorFlow's matmul runs the same oneDNN/Eigen kernels and thread pool as training, so this is
    the practical ceiling a convolution (a matmul in disguise) could approach.
    """
    import tensorflow as tf

    a = tf.random.stateless_uniform((n, n), seed=(1, 2))
    b = tf.random.stateless_uniform((n, n), seed=(3, 4))

    @tf.function
    def mm(x, y):
        return tf.matmul(x, y)

    mm(a, b).numpy()  # trace and warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        mm(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9
