"""The restore's plan, read off the archives' listings (``pg_restore --list``): what runs before the
data, which runs carry the data, and which steps (indexes, keys) may start as soon as their tables' rows
are in."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from questboard_backup.errors import IntegrityError

DATA_KINDS = ("TABLE DATA", "SEQUENCE SET", "BLOBS", "BLOB DATA", "LARGE OBJECTS")
PARALLEL_AFTER_DATA = ("INDEX", "CONSTRAINT")
_KNOWN_KINDS = sorted(
    (*DATA_KINDS, "FK CONSTRAINT", "INDEX ATTACH", "MATERIALIZED VIEW DATA", *PARALLEL_AFTER_DATA),
    key=len,
    reverse=True,
)
_ENTRY = re.compile(r"^\d+; \d+ \d+ (?P<rest>.*)$")


def entry_kind(line: str) -> str:
    match = _ENTRY.match(line)
    if not match:
        return ""
    rest = match.group("rest")
    return next((kind for kind in _KNOWN_KINDS if rest.startswith(kind + " ")), rest.split(" ", 1)[0])


def names_of(line: str) -> tuple[str, str]:
    """``("public", "users")`` from ``"3385; 0 16386 TABLE DATA public users owner"``."""
    parts = line.split(" ")
    return (parts[-3], parts[-2]) if len(parts) >= 3 else ("", "")


def table_of(line: str) -> str:
    schema, name = names_of(line)
    return f"{schema}.{name}" if schema else ""


#: Words in a listing line whose names have no spaces: "ID; catalog oid KIND schema tag owner", the tag
#: of a table constraint being "table name".
_PLAIN_WORDS = {"TABLE DATA": 8, "INDEX": 7, "CONSTRAINT": 8, "FK CONSTRAINT": 9}


def plain(line: str) -> bool:
    """True when the line's names can be read off it (no name holds a space)."""
    return len(line.split(" ")) == _PLAIN_WORDS.get(entry_kind(line), -1)


def loaded_tables(lines: Sequence[str]) -> dict[str, str]:
    """The tables whose rows these TABLE DATA lines load, each by the one line naming it; tables whose
    names cannot be read off unambiguously (a space in a name; a dot making two names read alike) are
    left out, so every step on them waits until all rows are in."""
    named: dict[str, list[str]] = {}
    for line in lines:
        if entry_kind(line) == "TABLE DATA" and plain(line):
            named.setdefault(table_of(line), []).append(line)
    return {table: found[0] for table, found in named.items() if len(found) == 1}


def split_by_weight(lines: Sequence[str], jobs: int, weight: Callable[[str], int]) -> list[list[str]]:
    """Greedy: heaviest first onto the lightest list; each list keeps the archive's order."""
    order = {line: index for index, line in enumerate(lines)}
    bins: list[list[str]] = [[] for _ in range(jobs)]
    loads = [0] * jobs
    for line in sorted(lines, key=weight, reverse=True):
        lightest = loads.index(min(loads))
        bins[lightest].append(line)
        loads[lightest] += max(weight(line), 1)
    return [sorted(group, key=order.__getitem__) for group in bins if group]


@dataclass(frozen=True)
class Run:
    """One step: a pg_restore process restoring ``entries`` from ``part`` (reading that part to its
    sealed end with ``to_end``, which authenticates all of it); for ``kind`` "copy", the loading of a
    copy part's ``tables`` (``entries`` then names them as listing lines would); for ``kind`` "count",
    the row counts of the tables whose TABLE DATA ``entries`` name."""

    part: int
    entries: list[str]
    to_end: bool
    kind: str = "data"  # "data" (rows), "copy" (rows of a copy part), "post" (indexes, keys...) or "count"
    #: A copy part's tables, ``[key, schema, name]`` each, in the part's order.
    tables: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class RestorePlan:
    """``before`` runs first on one process; then the ``data`` runs at once, and each ``post`` entry
    (indexes, table constraints, and foreign keys whose tables the facts name) as soon as what it
    needs is in; ``rest`` last, in archive order on one process (other foreign keys, triggers, grants)."""

    before: list[str]
    data: list[Run]
    post: list[str]
    rest: list[str]


def plan_restore(
    tocs: Sequence[Sequence[str]],
    jobs: int,
    rows: Mapping[str, int],
    foreign_keys: Mapping[str, Sequence[str]] | None = None,
    copy_parts: Sequence[Sequence[Sequence[str]]] = (),
) -> RestorePlan:
    """``tocs[0]`` lists the main archive, ``tocs[k]`` the data-only archive part k, of which only table
    data is restored (its sequence values are the main archive's business); the copy parts follow
    them, numbered on from ``len(tocs)``, each listing its tables as ``[key, schema, name]``."""
    entries = [line for line in tocs[0] if _ENTRY.match(line)]
    further = [[line for line in toc if entry_kind(line) == "TABLE DATA"] for toc in tocs[1:]]
    data_positions = [i for i, line in enumerate(entries) if entry_kind(line) in DATA_KINDS]
    if not data_positions:
        if any(further) or copy_parts:
            raise IntegrityError("postgres: the main archive holds no data but further parts do")
        return RestorePlan(entries, [Run(part, [], True) for part in range(len(tocs))], [], [])
    first, last = data_positions[0], data_positions[-1]
    before, data, after = entries[:first], entries[first : last + 1], entries[last + 1 :]
    main_jobs = max(1, jobs - len(further) - len(copy_parts))
    main_data = split_by_weight(data, main_jobs, lambda line: rows.get(table_of(line), 0))
    # The first main data run and every part's run read their stream to its sealed end: the whole
    # backup is authenticated once the data is in.
    runs = [Run(0, group, index == 0) for index, group in enumerate(main_data)]
    runs += [Run(part, group, True) for part, group in enumerate(further, start=1)]
    for part, tables in enumerate(copy_parts, start=len(tocs)):
        if not tables or any(len(table) != 3 for table in tables):
            raise IntegrityError("postgres: the manifest facts list a copy part unreadably")
        lines = [f"0; 0 0 TABLE DATA {schema} {name} -" for _key, schema, name in tables]
        runs.append(Run(part, lines, True, kind="copy", tables=tuple(tuple(table) for table in tables)))

    loaded = set(loaded_tables([line for run in runs for line in run.entries]))

    def early(line: str) -> bool:
        """Indexes and keys; foreign keys only where both tables are known to load here (else one could
        start before the key it references exists)."""
        kind = entry_kind(line)
        if kind == "FK CONSTRAINT":
            tables = (foreign_keys or {}).get(fk_key(line)) if plain(line) else None
            return tables is not None and set(tables[:2]) <= loaded
        return kind in PARALLEL_AFTER_DATA

    return RestorePlan(
        before,
        runs,
        [line for line in after if early(line)],
        [line for line in after if not early(line)],
    )


def fk_key(line: str) -> str:
    # "3413; 2606 16423 FK CONSTRAINT public quests quests_posted_by_fkey owner" -> "public quests quests_posted_by_fkey"
    return " ".join(line.split(" ")[-4:-1])


def post_table(line: str, index_tables: Mapping[str, str]) -> str | None:
    """The table an index or table constraint entry works on, where the listing and the dump's facts
    tell it (None: unknown)."""
    if not plain(line):
        return None
    parts = line.split(" ")
    kind = entry_kind(line)
    if kind == "CONSTRAINT":
        # "3410; 2606 16420 CONSTRAINT public users users_pkey owner": only a key or unique constraint
        # (its index, named alike, is in the facts) is known to touch no other table; a CHECK added
        # NOT VALID to an inheritance parent would reach children still loading.
        table = f"{parts[-4]}.{parts[-3]}"
        return table if index_tables.get(f"{parts[-4]}.{parts[-2]}") == table else None
    if kind == "INDEX":
        # "3412; 1259 16422 INDEX public submissions_by_quest owner": the facts map the index to its table
        return index_tables.get(table_of(line))
    return None
