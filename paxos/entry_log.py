"""The replica core's log of accepted entries, with a bound in bytes on what stays in memory.

Role: `EntryLog` maps slot index -> `Entry` for every slot the replica holds
(from its log start on). Applied entries are kept for followers that catch
up (up to `truncate_keep_entries` of them), and with 4 MiB values a thousand
of them would cost 4 GiB: so once the resident entries exceed
`resident_bytes`, the oldest applied ones leave memory, and reading one reads
it back through `read` (the driver's LevelDB log, the simulation's durable
map). Pure: `read` is the only way out, and it is given in.

Invariants:
- Only entries that are durable (written by an earlier synced `Persist`) and
  applied are evicted; they form one contiguous run, the log start through
  `evicted_through`, so every slot of it is on disk and read back on demand.
  An applied entry never changes (the core never overwrites a chosen slot),
  so a read-back entry is the one that was evicted.
- Without `read` nothing is evicted (unit tests, scripts): the log is a dict.
- `__contains__`, `indexes` and `max_index` never read the disk.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from paxos.messages import Entry

EntryReader = Callable[[int], "Entry | None"]


class EntryLog:
    def __init__(self, entries: Iterable[Entry], *, stored: Iterable[int] = (), read: EntryReader | None = None,
                 resident_bytes: int = 0, on_read: Callable[[], None] = lambda: None) -> None:
        """`entries`: the entries loaded into memory; `stored`: indexes held on disk but not loaded
        (a contiguous run of applied slots below every loaded one; needs `read`)."""
        self._resident: dict[int, Entry] = {entry.index: entry for entry in entries}
        self._bytes = sum(len(entry.command) for entry in self._resident.values())
        self._read = read
        self._budget = resident_bytes
        self._on_read = on_read
        stored = sorted(stored)
        assert not stored or read is not None, "entries left on disk need a reader"
        assert stored == list(range(stored[0], stored[-1] + 1)) if stored else True, "stored indexes must be contiguous"
        self._evicted_from = stored[0] if stored else 1
        self._evicted_through = stored[-1] if stored else 0  # empty when _evicted_through < _evicted_from
        self.evictions = 0
        self.reads = 0

    # ------------------------------------------------------------ reading

    def _evicted(self, index: int) -> bool:
        return self._evicted_from <= index <= self._evicted_through

    def get(self, index: int) -> Entry | None:
        entry = self._resident.get(index)
        if entry is not None or not self._evicted(index):
            return entry
        assert self._read is not None
        self.reads += 1
        self._on_read()
        entry = self._read(index)
        assert entry is not None and entry.index == index, f"log entry {index} is missing from storage"
        return entry

    def __getitem__(self, index: int) -> Entry:
        entry = self.get(index)
        if entry is None:
            raise KeyError(index)
        return entry

    def __contains__(self, index: object) -> bool:
        return index in self._resident or (isinstance(index, int) and self._evicted(index))

    def indexes(self) -> Iterator[int]:
        """Every index held, in no particular order."""
        if self._evicted_through >= self._evicted_from:
            yield from range(self._evicted_from, self._evicted_through + 1)
        yield from list(self._resident)

    def max_index(self, default: int) -> int:
        top = max(self._resident, default=default)
        return max(top, self._evicted_through) if self._evicted_through >= self._evicted_from else top

    @property
    def resident_bytes(self) -> int:
        return self._bytes

    # ------------------------------------------------------------ writing

    def put(self, entry: Entry) -> None:
        assert not self._evicted(entry.index), f"slot {entry.index} is applied and on disk; it never changes"
        old = self._resident.get(entry.index)
        if old is not None:
            self._bytes -= len(old.command)
        self._resident[entry.index] = entry
        self._bytes += len(entry.command)

    def drop_through(self, through: int) -> None:
        """Forget every slot at or below `through` (a truncation or a snapshot install)."""
        if self._evicted_through >= self._evicted_from:
            self._evicted_from = max(self._evicted_from, through + 1)
        for index in [index for index in self._resident if index <= through]:
            self._bytes -= len(self._resident.pop(index).command)

    def evict(self, applied_index: int, pending: Iterable[int]) -> None:
        """Leave memory, oldest first, until the resident entries fit the budget: only slots at or
        below `applied_index` that are not in `pending` (written but not yet synced), and only while
        they continue the evicted run (so the run stays contiguous)."""
        if self._read is None or self._bytes <= self._budget:
            return
        pending = set(pending)
        nxt = self._evicted_through + 1 if self._evicted_through >= self._evicted_from else min(self._resident, default=0)
        while self._bytes > self._budget and nxt <= applied_index and nxt in self._resident and nxt not in pending:
            if self._evicted_through < self._evicted_from:
                self._evicted_from = nxt
            self._bytes -= len(self._resident.pop(nxt).command)
            self._evicted_through = nxt
            self.evictions += 1
            nxt += 1
