"""Name -> entry registries (readers, runners, models, exporters): one class, one "unknown name"
error.

Each extension point keeps a `Registry`; adding an entry is one line (`REG["name"] = entry`, or
the `@REG.register("name")` decorator). An entry may be a `"module:attribute"` string, imported
on first use, so that e.g. importing `serving` never pulls in LiteRT or TensorFlow.

Example:
    >>> MODELS = Registry("model")
    >>> @MODELS.register("unet2d")
    ... def unet2d(input_shape, num_classes, filters, depth): ...
    >>> MODELS.lookup("unet3d")   # ConfigError: Unknown model `unet3d`; valid names: ['unet2d']...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

from serving.errors import ConfigError


class Registry(MutableMapping):
    """An ordered mapping of names to entries, with lazy `"module:attribute"` entries.

    Args:
        kind: what an entry is, for the error message (e.g. "runner", "export format").
        entries: initial entries, in order (iteration keeps the insertion order).
    """

    def __init__(self, kind: str, entries: Mapping[str, Any] | None = None):
        self.kind = kind
        self._entries: dict[str, Any] = dict(entries or {})

    def __getitem__(self, name: str) -> Any:
        entry = self._entries[name]
        if isinstance(entry, str):  # "module:attribute", imported on first use
            module, _, attribute = entry.partition(":")
            entry = self._entries[name] = getattr(importlib.import_module(module), attribute)
        return entry

    def __setitem__(self, name: str, entry: Any) -> None:
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def register(self, name: str, entry: Any = None) -> Any:
        """Add `entry` under `name`; without `entry`, a decorator that adds what it decorates."""
        if entry is not None:
            self[name] = entry
            return entry

        def decorate(obj: Callable) -> Callable:
            self[name] = obj
            return obj

        return decorate

    def names(self) -> list[str]:
        return sorted(self._entries)

    def lookup(self, name: str) -> Any:
        """The entry registered as `name`.

        Raises:
            ConfigError: for an unknown name, listing the valid ones.
        """
        if name not in self._entries:
            raise ConfigError(
                f"Unknown {self.kind} `{name}`; valid names: {self.names()}. Received: {name!r}"
            )
        return self[name]
