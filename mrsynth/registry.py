"""Name -> implementation tables that code outside the library can extend.

A backend's losses (``train.loss``) and training objectives (``train.objective``) are
registries: ``@LOSSES.register("name")`` adds one, ``LOSSES.pop("name")`` removes it again
(tests do that in a fixture), and a lookup of a missing name is a one-line ConfigError that
names the config key.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from mrsynth.errors import ConfigError

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """A dict of implementations for the values of one config key (``key``, e.g. 'train.loss')."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding an implementation under ``name``; a name is taken only once."""

        def add(implementation: T) -> T:
            if name in self:
                raise ValueError(f"{self.key}: {name!r} is already registered")
            self[name] = implementation
            return implementation

        return add

    def lookup(self, name: str) -> T:
        """The implementation registered as ``name``."""
        if name not in self:
            raise ConfigError(f"{self.key}: {name!r} is not registered here (registered: {', '.join(self)})")
        return self[name]
