"""One registry per concept (steps, runtimes, datasets, models, quantization backends), one way to fill it.

A registry names the modules that hold its built-in plug-ins and an entry-point group for other packages'
(``[project.entry-points."slimline.runtimes"]`` in their ``pyproject.toml``: ``name = "pkg.module"``). Both are
imported the first time the registry is read; each module registers its objects with the decorator. A new
plug-in is one file plus one line: its module in the built-in list, or its entry point.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from slimline.errors import SlimlineError, first_line

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object map whose lookups fail with the list of valid names.

    ``modules``: built-in plug-in modules, imported on first use; a module whose own file is missing is
    skipped (``optional`` ones too when a package they need at import is missing). ``group``: the entry-point
    group of other packages' plug-ins.
    """

    def __init__(
        self, kind: str, modules: Sequence[str] = (), group: str | None = None, optional: Sequence[str] = ()
    ) -> None:
        self.kind = kind
        self.group = group
        self._modules, self._optional = tuple(modules), tuple(optional)
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def load(self) -> None:
        """Import the built-in plug-in modules and the installed entry points (once)."""
        if self._loaded:
            return
        self._loaded = True  # before importing: the modules read the registry as they register
        for mod in self._modules:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:
                if e.name != mod and not (mod in self._optional and e.name and not e.name.startswith("slimline")):
                    raise
        for ep in entry_points(group=self.group) if self.group else ():
            try:
                ep.load()
            except Exception as e:  # noqa: BLE001 - someone else's package: any failure is one line
                raise SlimlineError(
                    f"the {self.kind} plug-in {ep.name!r} ({ep.value}, entry point group {self.group}) failed to "
                    f"load: {first_line(e)}; fix or uninstall the package that provides it"
                ) from e

    def get(self, name: str) -> T:
        self.load()
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "(none)"
            raise SlimlineError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def names(self) -> list[str]:
        self.load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self.load()
        return iter(sorted(self._items))
