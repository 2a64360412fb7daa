"""Import optional dependencies only when they are needed, with an install hint when missing.

`serving` must import with numpy and onnxruntime alone, so readers, LiteRT and TensorFlow are
reached through this function at call time.
"""

import importlib
from types import ModuleType

from serving.errors import DependencyError


def lazy_import(module: str, pip_name: str | None = None, purpose: str = "") -> ModuleType:
    """Import `module`, or raise `DependencyError` saying what to install.

    Args:
        module: dotted module name, e.g. "pydicom".
        pip_name: the distribution that provides it, when its name differs from the module's.
        purpose: what the module is needed for, shown in the error.

    Returns:
        The imported module.

    Raises:
        DependencyError: if the module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        need = f" to {purpose}" if purpose else ""
        raise DependencyError(
            f"`{module}` is needed{need} but is not installed: `pip install {pip_name or module}`. "
            f"Received: {type(err).__name__}: {err}"
        ) from err
