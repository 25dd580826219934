"""Named components chosen in the config (realignment rules, curricula): one mechanism for all."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from cmgh.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """``register(name)`` decorator, ``get(name)``, ``names()`` and ``described()``; an unknown name is a ConfigError
    naming the config key it came from."""

    def __init__(self, kind: str, config_key: str) -> None:
        self.kind, self.config_key = kind, config_key
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def wrap(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            return item

        return wrap

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"{self.config_key}: {name!r} is not one of {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def described(self) -> list[str]:
        """``name: first line of its docstring`` for every registered item (what ``cmgh list`` prints)."""
        return [f"{name}: {summary(self._items[name])}" for name in self.names()]


def summary(item: object) -> str:
    """The first line of an item's docstring ("" without one)."""
    doc = (getattr(item, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""
