"""One small registry type and the registries of every component kind."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """A name is registered twice or looked up but unknown."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered component: the factory plus free-form metadata (e.g. modalities)."""

    name: str
    factory: Callable[..., T]
    metadata: dict[str, Any] = field(default_factory=dict)
    help: str = ""

    def parameters(self) -> dict[str, inspect.Parameter]:
        """Constructor parameters that a config may set (``self`` and ``**kwargs`` excluded)."""
        params = inspect.signature(self.factory).parameters
        return {
            n: p
            for n, p in params.items()
            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }


class Registry(Generic[T]):
    """Maps names to component factories. Registering a name twice is an error."""

    def __init__(self, kind: str, packages: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._packages = packages  # imported (once) on the first lookup: their modules register here
        self._loaded = not packages

    def load(self) -> None:
        """Import the packages whose modules register into this registry (once; lookups call it)."""
        if self._loaded:
            return
        self._loaded = True
        for package in self._packages:
            importlib.import_module(package)

    def register(self, name: str, **metadata: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@ENCODERS.register("vit", modalities=("image",))``."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            self.add(name, factory, **metadata)
            return factory

        return decorator

    def add(self, name: str, factory: Callable[..., T], **metadata: Any) -> None:
        if name in self._entries:
            raise RegistryError(f"{self.kind} {name!r} is already registered")
        doc = inspect.getdoc(factory) or ""
        self._entries[name] = Entry(name, factory, dict(metadata), doc.split("\n")[0])

    def get(self, name: str) -> Entry[T]:
        self.load()
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}"
            ) from None

    def build(self, name: str, **kwargs: Any) -> T:
        return self.get(name).factory(**kwargs)

    def names(self, **where: Any) -> list[str]:
        """Registered names, optionally filtered by metadata, e.g. ``names(modality="image")``.

        A filter value matches a metadata value equal to it, or a metadata tuple/list containing it.
        """
        self.load()
        out = []
        for name, entry in self._entries.items():
            ok = True
            for key, want in where.items():
                plural = key[:-1] + "ies" if key.endswith("y") else key + "s"
                have = entry.metadata.get(key, entry.metadata.get(plural))
                if isinstance(have, (tuple, list, set, frozenset)):
                    ok = ok and want in have
                else:
                    ok = ok and have == want
            if ok:
                out.append(name)
        return sorted(out)

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self.load()
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        self.load()
        return len(self._entries)

    def items(self) -> list[tuple[str, Entry[T]]]:
        self.load()
        return sorted(self._entries.items())


def call_with(factory: Callable[..., T], offered: Mapping[str, Any], params: Mapping[str, Any]) -> T:
    """Call ``factory`` with the ``offered`` values its signature names (injected by the builder), then
    the config's ``params``. The one argument injector: the builder and composite encoders use it."""
    names = inspect.signature(factory).parameters
    return factory(**{**{k: v for k, v in offered.items() if k in names}, **params})


ENCODERS: Registry[Any] = Registry("encoder", ("polyfuse.encoders",))
FUSIONS: Registry[Any] = Registry("fusion", ("polyfuse.fusion",))
HEADS: Registry[Any] = Registry("head", ("polyfuse.heads",))
OBJECTIVES: Registry[Any] = Registry("objective", ("polyfuse.objectives",))
DATASETS: Registry[Any] = Registry("dataset", ("polyfuse.data.datasets",))
PROCESSORS: Registry[Any] = Registry("processor", ("polyfuse.data.processors",))
REGISTRIES = (ENCODERS, FUSIONS, HEADS, OBJECTIVES, DATASETS, PROCESSORS)


def load_all() -> None:
    """Register every component (what ``polyfuse components`` lists); lookups load their own kind."""
    for registry in REGISTRIES:
        registry.load()
