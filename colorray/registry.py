"""A name -> builder registry, the mechanism behind ``create_model`` and ``create_loss``.

Each architecture or loss registers itself in its own file with
``@REGISTRY.register("name", **facts)``; users build by name with options, and
unknown names or options fail with a message listing what exists.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable


class UnknownNameError(KeyError):
    """A model, loss or other registered name that does not exist."""

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownOptionError(TypeError):
    """An option a registered builder does not take (a config error, unlike other TypeErrors)."""


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}
        self._facts: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **facts: Any) -> Callable:
        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._builders:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._builders[name] = builder
            self._facts[name] = facts
            return builder

        return decorator

    def names(self) -> list[str]:
        return sorted(self._builders)

    def check(self, name: str) -> None:
        if name not in self._builders:
            raise UnknownNameError(f"unknown {self.kind} '{name}'; known {self.kind}s: {', '.join(self.names())}")

    def facts(self, name: str) -> dict[str, Any]:
        self.check(name)
        return dict(self._facts[name])

    def option_names(self, name: str) -> list[str]:
        self.check(name)
        return list(inspect.signature(self._builders[name]).parameters)

    def check_options(self, name: str, options: dict[str, Any]) -> None:
        self.check(name)
        parameters = inspect.signature(self._builders[name]).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return
        unknown = sorted(set(options) - set(parameters))
        if unknown:
            raise UnknownOptionError(
                f"{self.kind} '{name}' has no option {', '.join(repr(u) for u in unknown)}; "
                f"its options: {', '.join(parameters) or 'none'}"
            )

    def create(self, name: str, **options: Any) -> Any:
        self.check_options(name, options)
        return self._builders[name](**options)
