"""A small name → factory registry shared by datasets, models, attacks and acquisition functions.

One registry per component kind; entries are added with a decorator, so adding a component is one new function and
its decorator. The CLI takes its choices from here, and unknown names fail with the valid ones and a near match.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from robustal.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (usually factories) of one component kind.

    Args:
        kind: What the entries are, used in messages ("dataset", "model", ...).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that records its target under ``name``; a duplicate name is an error."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The entry called ``name``, or :class:`UnknownNameError` listing the valid names and the nearest one."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._entries)) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, in registration order."""
        return [n for n in self._entries if fnmatch.fnmatch(n, pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
