"""What a build finds for the entry it is deciding, shared by every view that shapes it alike
(`Shapes`), and the signal facts it keeps for the next build."""

from __future__ import annotations

from gateway.entry import Entry
from gateway.served import Deferred
from gateway.shaping import Shape, SignalFacts

# an entry, its shaping key, its facts, the answers' generation
Kept = tuple[Entry, int, SignalFacts, object]


class Shapes:
    """The shapes of the entry being decided, shared by every view that shapes it alike: the
    same package types, and the same mirror settings for the registry types it has. A view
    with its own npm mirror still shares the shapes of PyPI-only and remote-only entries.

    A build decides each entry in every view in turn, so only the current entry's shapes are
    kept: nothing per entry outlives its decision (an unchanged server keeps its items).
    """

    def __init__(self) -> None:
        self._entry: Entry | None = None
        self._found: dict[object, Shape] = {}
        self._later: dict[object, Deferred] = {}
        self._signals: dict[object, SignalFacts] = {}
        # Signal facts kept from the last build, and those of this one, by `slot` (entry,
        # shaping key), used again while the mirror answers they read are the same
        self.last_kept: dict[int, Kept] = {}
        self.kept: dict[int, Kept] = {}

    def new_build(self) -> None:
        """What the last build kept is what this one may use; what it does not use is let go.
        Nothing found for the entry decided last outlives the build (the next build may
        decide that same entry first, with other mirror answers)."""
        self.last_kept, self.kept = self.kept, {}
        self.forget()

    def forget(self) -> None:
        """Let go of what was found for the current entry."""
        self._entry = None
        self._found, self._later, self._signals = {}, {}, {}

    def of(self, entry: Entry) -> dict[object, Shape]:
        """The shapes found so far for this entry, by shaping key."""
        self._current(entry)
        return self._found

    def later(self, entry: Entry) -> dict[object, Deferred]:
        """The rewrites deferred until written made so far for this entry, by shaping key."""
        self._current(entry)
        return self._later

    def signals(self, entry: Entry) -> dict[object, SignalFacts]:
        """The npm signal facts found so far for this entry, by shaping key."""
        self._current(entry)
        return self._signals

    def _current(self, entry: Entry) -> None:
        if entry is not self._entry:
            self._entry = entry
            self._found = {}
            self._later = {}
            self._signals = {}
