"""Name -> implementation tables that code outside the library can extend.

Architectures (``model.arch``: each backend's builders, the framework-free descriptions),
losses (``train.loss``) and training objectives (``train.objective``) are registries: a
plugin or a test adds an entry with ``register`` and removes it with ``unregister``. A config
value is checked against a table only when it is looked up (a model is built, a step is
compiled), so config validation needs no framework; an unknown name is a one-line ConfigError
that names the config key and the registered names.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar, overload

from mrsynth.errors import ConfigError

Entry = TypeVar("Entry")


class Registry(Generic[Entry]):
    """The implementations of one config key's values (``key``, e.g. 'train.loss') in one place
    (``owner``, e.g. 'jax backend'); ``noun`` names what an entry is in error messages."""

    def __init__(self, key: str, noun: str, owner: str) -> None:
        self.key, self.noun, self.owner = key, noun, owner
        self._entries: dict[str, Entry] = {}

    @overload
    def register(self, name: str) -> Callable[[Entry], Entry]: ...

    @overload
    def register(self, name: str, entry: Entry) -> Entry: ...

    def register(self, name: str, entry: Entry | None = None):
        """Add ``entry`` under ``name`` (or, without ``entry``, a decorator that does); a name is
        taken once: unregister it first."""
        def add(value: Entry) -> Entry:
            if not name.isidentifier():
                raise ValueError(f"{self.key}: {name!r} is not an identifier")
            if name in self._entries:
                raise ValueError(f"{self.key}: {name!r} is already registered in the {self.owner}")
            self._entries[name] = value
            return value

        return add if entry is None else add(entry)

    def unregister(self, name: str) -> None:
        """Forget ``name`` (a test's entry when the test ends)."""
        del self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def find(self, name: str) -> Entry | None:
        return self._entries.get(name)

    def lookup(self, name: str) -> Entry:
        """The entry of ``name``; an unknown name is a one-line config error listing the known ones."""
        if name not in self._entries:
            raise ConfigError(f"{self.key}: unknown {self.noun} {name!r} for the {self.owner} "
                              f"(choose from {', '.join(self.names())})")
        return self._entries[name]
