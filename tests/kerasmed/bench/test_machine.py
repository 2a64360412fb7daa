"""The machine line every benchmark and demo report carries."""

from kerasmed.bench.machine import FLAGS_THAT_MATTER, cpu_info, describe_cpu


def _info(**flags):
    return {"name": "AMD EPYC 7B13", "family": "25", "machine": "x86_64", "logical_cpus": 2,
            "usable_cpus": 2, "onednn_max_isa": "default",
            "flags": {f: flags.get(f, False) for f in FLAGS_THAT_MATTER}}


def test_describe_cpu_names_family_and_kernel_flags():
    line = describe_cpu(_info(avx2=True, fma=True))
    assert line == "AMD EPYC 7B13 (family 25), 2 CPUs, AVX2 yes, AVX-512 no, BF16 no"
    capped = dict(_info(avx2=True, avx512f=True, avx512_bf16=True), onednn_max_isa="AVX2")
    assert describe_cpu(capped).endswith("AVX-512 yes, BF16 yes, oneDNN capped at AVX2")


def test_cpu_info_reads_this_machine(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    info = cpu_info()
    assert set(info["flags"]) == set(FLAGS_THAT_MATTER)
    assert info["onednn_max_isa"] == "AVX2"
    assert info["usable_cpus"] >= 1 and info["logical_cpus"] >= info["usable_cpus"]
    assert describe_cpu(info).startswith(info["name"])
