"""Name-keyed registries for backbones and whole networks.

A registry maps a name to a factory (a class or a function returning an ``nn.Module``).
As in torchvision, registering a name twice is an error, and asking for a name that is
not there lists the names that are.

    BACKBONES = Registry("backbone")

    @BACKBONES.register("tiny")
    def _tiny() -> Backbone: ...

    BACKBONES.get("tiny")()
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["Registry", "RegistryError", "UnknownNameError"]

F = TypeVar("F", bound=Callable[..., Any])


class RegistryError(ValueError):
    """A registry was used wrongly: a duplicate or malformed name."""


class UnknownNameError(RegistryError, KeyError):
    """A name that is not in the registry; the message lists the known names."""

    def __str__(self) -> str:
        # KeyError quotes its message; ValueError's plain text reads better.
        return str(self.args[0]) if self.args else ""


class Registry:
    """A name -> factory table with strict registration.

    Args:
        kind: What the registry holds ("backbone", "model"); used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator registering a factory under ``name``.

        Raises:
            RegistryError: If ``name`` is empty or already registered.
        """
        if not isinstance(name, str) or not name or name != name.strip():
            raise RegistryError(f"{self.kind} name must be a non-empty string without spaces "
                                f"around it, got {name!r}")

        def decorator(factory: F) -> F:
            if name in self._entries:
                raise RegistryError(
                    f"{self.kind} {name!r} is already registered "
                    f"(by {_describe(self._entries[name])}); pick another name"
                )
            self._entries[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered under ``name``.

        Raises:
            UnknownNameError: If no factory has that name; the message lists the known ones.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            known = ", ".join(self.names()) or "(none)"
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known {self.kind}s: {known}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _describe(factory: Callable[..., Any]) -> str:
    module = getattr(factory, "__module__", "?")
    qualname = getattr(factory, "__qualname__", repr(factory))
    return f"{module}.{qualname}"
