"""kerasmed: train medical-imaging models in Keras and ship them anywhere."""

import os
import platform

__version__ = "0.1.0"

# TensorFlow turns its oneDNN kernels on by default only on x86 CPUs with AVX-512 VNNI, BF16 or
# AMX. On an AVX2-only CPU (AMD Zen 3) it falls back to Eigen, whose convolutions are ~1,500 small
# GEMM calls per U-Net training step: measured there, the flagship trains twice as fast with
# oneDNN on (`make bench` names the setting it ran with). It must be set before TensorFlow is
# imported, which is why it sits here; an explicit TF_ENABLE_ONEDNN_OPTS in the environment wins.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
