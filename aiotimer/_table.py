""":class:`TimerTable`: timers declared by a library, added to a scheduler by the application.

Like aiohttp's ``RouteTableDef``: a library decorates its functions on a module-level table,
and whoever owns the event loop adds the table to its scheduler (``scheduler.add_table``).
Specs are validated when declared, so a bad interval fails at import, not at start.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import final

from ._registrar import Registrar
from ._spec import TimerSpec, callback_name

__all__ = ["TimerTable"]


@final
class TimerTable(Registrar[TimerSpec]):
    """An ordered collection of :class:`TimerSpec`, filled with the same decorators and
    ``add_*`` methods as a :class:`~aiotimer.Scheduler`."""

    __slots__ = ("_decorated", "_specs", "name")

    def __init__(self, name: str = "timers") -> None:
        self.name = name
        self._specs: list[TimerSpec] = []
        self._decorated: set[int] = set()  # ids of specs that came from a decorator

    def _register(self, spec: TimerSpec, decorated: bool) -> TimerSpec:
        for other in self._specs:
            if spec.name is not None and other.name == spec.name:
                raise ValueError(f"timer {spec.name!r} is already in table {self.name!r}")
            if decorated and id(other) in self._decorated and other.callback is spec.callback:
                raise ValueError(
                    f"timer {spec.label!r}: function {callback_name(spec.callback)} is already "
                    f"in table {self.name!r}"
                )
        self._specs.append(spec)
        if decorated:
            self._decorated.add(id(spec))
        return spec

    def is_decorated(self, spec: TimerSpec) -> bool:
        return id(spec) in self._decorated

    def __iter__(self) -> Iterator[TimerSpec]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"<TimerTable {self.name!r} timers={len(self._specs)}>"
