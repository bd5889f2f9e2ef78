"""The methods an experiment compares, declared once by name: one registry per experiment.

A registry maps a method's name to a one-line summary and a builder, ``build(config, **context) →
(augmenter, objective)`` (the experiment's config, or whatever arguments its builders share). It checks the
``methods`` key of a config, builds a method by name, and lists the methods with their summaries (``instaaug show
EXPERIMENT``). Adding a method to an experiment is one decorated function::

    METHODS = MethodRegistry("crop")

    @METHODS.register("none", "no augmentation")
    def _none(config, num_classes):
        return NoAugment(in_channels=1), TaskObjective()

A method registered with ``setting=float`` also answers to ``NAME-VALUE`` (e.g. ``random-0.5``, one point of a
random-augmentation sweep); its builder then receives ``setting=VALUE``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

Builder = TypeVar("Builder", bound=Callable[..., Any])


@dataclass(frozen=True)
class Method:
    """One registered method.

    Attributes:
        name: its name in configs (``--set methods=...``) and in ``metrics.json``.
        summary: one line for ``instaaug show``.
        build: ``build(config, **context) → (augmenter, objective)`` (some experiments return other pairs,
            e.g. an encoder and a loss; the registry does not look inside).
        setting: the type of the ``NAME-VALUE`` suffix the method accepts (None: none).
    """

    name: str
    summary: str
    build: Callable[..., Any]
    setting: type | None = None


class MethodRegistry:
    """The methods of one experiment, in reporting order (the order of registration)."""

    def __init__(self, experiment: str) -> None:
        self.experiment = experiment
        self._methods: dict[str, Method] = {}

    def register(self, name: str, summary: str, *, setting: type | None = None) -> Callable[[Builder], Builder]:
        """A decorator registering its function as the builder of method ``name``."""
        if name in self._methods:
            raise ValueError(f"method {name!r} is already registered for the {self.experiment} experiment")

        def decorate(build: Builder) -> Builder:
            self._methods[name] = Method(name, summary, build, setting)
            return build

        return decorate

    @property
    def names(self) -> tuple[str, ...]:
        """Every method's name, in reporting order."""
        return tuple(self._methods)

    def __iter__(self) -> Iterator[str]:
        return iter(self._methods)

    def __len__(self) -> int:
        return len(self._methods)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._resolve(name) is not None

    def __getitem__(self, name: str) -> Method:
        resolved = self._resolve(name)
        if resolved is None:
            raise ValueError(f"unknown method {name!r} of the {self.experiment} experiment; known: {list(self)}")
        return resolved[0]

    def __repr__(self) -> str:
        return f"MethodRegistry({self.experiment!r}, {list(self)})"

    def _resolve(self, name: str) -> tuple[Method, Any] | None:
        """(method, setting) for ``name`` or ``NAME-VALUE``; None if it names no method."""
        if name in self._methods:
            return self._methods[name], None
        base, dash, value = name.rpartition("-")
        method = self._methods.get(base) if dash else None
        if method is None or method.setting is None:
            return None
        try:
            return method, method.setting(value)
        except ValueError:
            return None

    def check(self, methods: str | Sequence[str]) -> tuple[str, ...]:
        """Validate a ``methods`` key: a non-empty list of registered names (a comma-separated string is
        accepted too). Returns it as a tuple; raises ValueError naming the known methods otherwise."""
        if isinstance(methods, str):
            methods = tuple(m for m in methods.split(",") if m)
        if not isinstance(methods, Sequence) or not all(isinstance(m, str) for m in methods):
            raise ValueError(f"methods must be a list of method names, got {methods!r}")
        unknown = [m for m in methods if m not in self]
        if unknown or not methods:
            raise ValueError(f"methods must be a non-empty subset of {list(self)}, got {list(methods)}")
        return tuple(methods)

    def build(self, name: str, *args: Any, **context: Any) -> Any:
        """Build method ``name`` (or ``NAME-VALUE``): its builder called with ``args`` and ``context``."""
        resolved = self._resolve(name)
        if resolved is None:
            raise ValueError(f"unknown method {name!r} of the {self.experiment} experiment; known: {list(self)}")
        method, setting = resolved
        if setting is not None:
            context["setting"] = setting
        return method.build(*args, **context)

    def describe(self) -> list[tuple[str, str]]:
        """(name, summary) of every method, in order: what ``instaaug show`` prints."""
        return [(m.name, m.summary) for m in self._methods.values()]
