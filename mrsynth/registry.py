"""Architecture name -> entry tables: each backend's network builders, and the framework-free descriptions.

``ModelConfig.arch`` is checked against a table only when something is looked up in it (a model
is built, FLOPs are counted), so config validation needs no framework and an architecture
registered at run time (a plugin, a test) is as valid as a built-in one.
"""
from __future__ import annotations

from typing import Generic, TypeVar

from mrsynth.errors import ConfigError

Entry = TypeVar("Entry")


class ArchitectureRegistry(Generic[Entry]):
    """Names of architectures and what one part of the code needs of each (``kind`` says which)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, entry: Entry) -> None:
        """Make ``model.arch: name`` use ``entry``; a name is registered once (unregister it first)."""
        if not name.isidentifier():
            raise ValueError(f"architecture name {name!r} is not an identifier")
        if name in self._entries:
            raise ValueError(f"architecture {name!r} already has a {self.kind}")
        self._entries[name] = entry

    def unregister(self, name: str) -> None:
        """Forget ``name`` (a test's architecture when the test ends)."""
        del self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def find(self, name: str) -> Entry | None:
        return self._entries.get(name)

    def get(self, name: str) -> Entry:
        """The entry of ``name``; an unknown name is a one-line config error listing the known ones."""
        if name not in self._entries:
            raise ConfigError(f"model.arch: unknown architecture {name!r} for the {self.kind} "
                              f"(choose from {', '.join(self.names())})")
        return self._entries[name]
