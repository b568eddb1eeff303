"""How every state machine in pggate moves: one transition table, one error for a bad move.

The negotiator, the login machine and the authentication exchanges each keep a table from
(state, event) to what follows. A pair the table does not list is a bug in the code driving the
machine, never bad input from a peer (peers' mistakes are events the tables handle), so it
raises :class:`IllegalMove`, which names the machine, the state and the event.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

StateT = TypeVar("StateT", bound=enum.Enum)
EventT = TypeVar("EventT")
ResultT = TypeVar("ResultT")


class IllegalMove(RuntimeError):
    """A machine was driven in a way its transition table does not allow."""

    def __init__(self, machine: str, state: enum.Enum, event: object) -> None:
        label = event.value if isinstance(event, enum.Enum) else event
        super().__init__(f"{machine}: {label!r} is not allowed in state {state.value!r}")
        self.machine = machine
        self.state = state
        self.event = event


def look_up(
    table: Mapping[tuple[StateT, EventT], ResultT], machine: str, state: StateT, event: EventT
) -> ResultT:
    """What ``table`` says follows ``event`` in ``state``, or :class:`IllegalMove`."""
    try:
        return table[state, event]
    except KeyError:
        raise IllegalMove(machine, state, event) from None
