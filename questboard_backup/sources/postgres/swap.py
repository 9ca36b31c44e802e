"""The swap of a staged PostgreSQL database into its target's place, in steps that another process can
finish or undo: every name derives from the target and the restore's timestamp, and the databases carry
the marks that tell what a killed step left.

For target ``db`` and timestamp ``ts`` (names cut short by ``derived_name`` where needed): the staging
database is ``{db}_restore_{ts}``, commented ``questboard-backup restore {ts} staged target={db}`` once
created; the previous copy is ``{db}_pre_restore_{ts}``. ``swap_in`` comments the staging database
``questboard-backup restore {ts} not settled target={db}`` (the comment follows it into ``db``), closes
it (ALLOW_CONNECTIONS false, its sessions ended: a monitoring agent connected to it cannot make the
rename fail), closes the target and renames it to the previous copy, renames staging to the target
and opens it. The previous copy stays closed until ``settle`` opens it and then clears the comment. So
a later process reads off the server:

- a target commented ``... {ts} not settled``: swapped in, not settled (``undo`` puts the previous copy
  back; a later restore's ``clear_leftovers`` settles it instead, as it may have taken writes since);
- no target but a closed ``{db}_pre_restore_*``: a swap, or its undo, killed between two renames;
- a ``{db}_restore_{ts}`` database: staged only, or left by a failure (``undo`` drops it, and
  ``clear_leftovers`` those of other timestamps, only with a mark naming ``db``).

A name alone proves nothing: ``{db}_pre``'s staging databases are named like ``{db}``'s previous
copies, so nothing is dropped or swapped in without a mark naming its target in full. A previous copy
is never marked itself (it keeps its target's comment, so any mark on it is an earlier restore's): a
database under its name is not put back or opened when its mark names another target, or names none
and the timestamp of its name. A mark written before marks named their target (``... {ts} staged``)
is left alone, with a warning. A settled previous copy is open and its target uncommented: it is the
operator's rollback copy, and nothing here drops it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

from questboard_backup.errors import SourceError
from questboard_backup.sources.postgres.staging import derived_name, drop_database
from questboard_backup.sources.postgres.tools import first_line

logger = logging.getLogger(__name__)

_TIMESTAMP = r"\d{8}_\d{6}"
_STAGED, _NOT_SETTLED = "staged", "not settled"
_MARKED = re.compile(
    rf"questboard-backup restore ({_TIMESTAMP}) ({_STAGED}|{_NOT_SETTLED})(?: target=(.*))?", re.DOTALL
)


@dataclass(frozen=True)
class Mark:
    """The comment a restore leaves on its databases: its timestamp, its step and its target."""

    timestamp: str
    step: str  # _STAGED or _NOT_SETTLED
    target: str | None  # None: written before marks named their target, so whose it is is unknown

    @classmethod
    def read(cls, comment: str | None) -> Mark | None:
        found = _MARKED.fullmatch(comment or "")
        return cls(found[1], found[2], found[3]) if found else None

    def __str__(self) -> str:
        return f"questboard-backup restore {self.timestamp} {self.step} target={self.target}"


@dataclass(frozen=True)
class SwapNames:
    """The databases of one restore of ``target``, named after its ``timestamp``."""

    target: str
    timestamp: str

    @property
    def staging(self) -> str:
        return derived_name(self.target, f"_restore_{self.timestamp}")

    @property
    def previous(self) -> str:
        return derived_name(self.target, f"_pre_restore_{self.timestamp}")

    @property
    def staged(self) -> str:
        return str(Mark(self.timestamp, _STAGED, self.target))

    @property
    def mark(self) -> str:
        return str(Mark(self.timestamp, _NOT_SETTLED, self.target))

    def at(self, timestamp: str) -> SwapNames:
        return SwapNames(self.target, timestamp)


@dataclass(frozen=True)
class _Database:
    name: str
    open: bool  # ALLOW_CONNECTIONS
    comment: str | None

    @property
    def mark(self) -> Mark | None:
        return Mark.read(self.comment)

    def mark_for(self, target: str) -> Mark | None:
        """This database's mark if it names ``target``. A mark naming no target (written before marks
        named theirs) may be another target's: it is logged, for the operator, and not taken."""
        mark = self.mark
        if mark is not None and mark.target is None:
            _leave(self)
        return mark if mark is not None and mark.target == target else None

    def marked_by(self, names: SwapNames) -> bool:
        """Whether this database carries a mark (either step) of the restore ``names``."""
        mark = self.mark_for(names.target)
        return mark is not None and mark.timestamp == names.timestamp

    def staged_for_another(self, names: SwapNames) -> bool:
        """Whether this database, found under the name of ``names``' previous copy, is another target's
        staging database (``{db}_pre``'s are named like ``{db}``'s previous copies): its mark names
        another target, or names none but has the restore's timestamp. A previous copy keeps its
        target's comment, and a mark there is an earlier restore's."""
        mark = self.mark
        if mark is None or mark.target == names.target:
            return False
        if mark.target is None:
            if mark.timestamp != names.timestamp:
                return False
            _leave(self)
        return True


def _leave(database: _Database) -> None:
    logger.warning(
        "postgres restore mark without target left database=%s comment=%s", database.name, database.comment
    )


def _databases(cur: Cursor, names: tuple[str, ...], stems: tuple[str, ...] = ()) -> dict[str, _Database]:
    """The databases named ``names`` or whose names start with one of ``stems``."""
    cur.execute(
        "SELECT datname, datallowconn, shobj_description(oid, 'pg_database') FROM pg_database "
        "WHERE datname = ANY(%s) OR EXISTS (SELECT FROM unnest(%s::text[]) stem WHERE starts_with(datname, stem))",
        (list(names), list(stems)),
    )
    return {
        str(name): _Database(str(name), bool(allowed), comment) for name, allowed, comment in cur.fetchall()
    }


def _of(cur: Cursor, names: SwapNames) -> dict[str, _Database]:
    return _databases(cur, (names.target, names.staging, names.previous))


def _alter(cur: Cursor, database: str, change: str, *names: str) -> None:
    """``ALTER DATABASE database <change>``, the ``{}`` in ``change`` filled with quoted ``names``."""
    identifiers = [sql.Identifier(name) for name in (database, *names)]
    cur.execute(sql.SQL("ALTER DATABASE {} " + change).format(*identifiers))


def _comment(cur: Cursor, database: str, text: str | None) -> None:
    cur.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(database), sql.Literal(text)))


def _close(cur: Cursor, database: str) -> None:
    """No new sessions, and the open ones ended: a session on a database makes its rename fail."""
    _alter(cur, database, "WITH ALLOW_CONNECTIONS false")
    # The rename then waits (up to 5 s) for the ended sessions to go. Only the sessions this role may
    # end are asked to: a session it may not end makes the rename fail naming the database in use,
    # rather than this statement fail on a permission.
    cur.execute(
        "SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid "
        "WHERE a.datname = %s AND a.pid <> pg_backend_pid() AND ("
        "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR NOT coalesce(r.rolsuper, true) "
        "AND (pg_has_role(a.usesysid, 'MEMBER') OR pg_has_role('pg_signal_backend', 'MEMBER')))",
        (database,),
    )


def _open(cur: Cursor, database: str) -> None:
    _alter(cur, database, "WITH ALLOW_CONNECTIONS true")


def swap_in(cur: Cursor, names: SwapNames) -> str | None:
    """Put the staging database in the target's place, the target kept aside (closed) as the previous
    copy; returns its name, or None when there was no target. On failure, whatever was moved is put
    back (the staging database stays, for ``undo``) and SourceError raised."""
    target, staging, previous = names.target, names.staging, names.previous
    found = _of(cur, names)
    if staging not in found:
        raise SourceError(f"cannot swap {staging} in for {target}: it does not exist (nothing staged)")
    if not found[staging].marked_by(names):
        raise SourceError(f"cannot swap {staging} in for {target}: it is not marked as staged for {target}")
    try:
        _comment(cur, staging, names.mark)
        _close(cur, staging)
    except psycopg2.Error as error:
        raise SourceError(f"cannot close {staging} to swap it in: {first_line(error)}") from None
    kept, moved = target in found, False
    try:
        if kept:
            _close(cur, target)
            _alter(cur, target, "RENAME TO {}", previous)
            moved = True
        _alter(cur, staging, "RENAME TO {}", target)
        _open(cur, target)
    except psycopg2.Error as error:
        reason = first_line(error)
        try:
            if kept and not moved:
                _open(cur, target)
            else:
                put_back(cur, names)
        except psycopg2.Error as second:
            logger.error("postgres swap not put back database=%s error=%s", target, first_line(second))
        raise SourceError(f"cannot swap {staging} in for {target}: {reason}") from None
    logger.info("postgres swapped in database=%s previous=%s", target, previous if kept else None)
    return previous if kept else None


def settle(cur: Cursor, names: SwapNames) -> None:
    """Open the previous copy (operators inspect it), then clear the target's mark; logs, never raises."""
    found = _of(cur, names)
    steps = []
    previous = found.get(names.previous)
    if previous is not None and not previous.open and not previous.staged_for_another(names):
        steps.append((names.previous, lambda: _open(cur, names.previous)))
    if names.target in found and found[names.target].comment == names.mark:
        steps.append((names.target, lambda: _comment(cur, names.target, None)))
    for database, step in steps:
        try:
            step()
        except psycopg2.Error as error:
            logger.warning("postgres swap not settled database=%s error=%s", database, first_line(error))


def put_back(cur: Cursor, names: SwapNames) -> list[str]:
    """Undo this restore's swap as far as it got: a target with this restore's mark goes back to the
    staging name, and the previous copy back to the target's name if that is free (and the copy not
    another target's marked database). Returns what it did."""
    target, staging, previous = names.target, names.staging, names.previous
    done = []
    found = _of(cur, names)
    if target in found and found[target].comment == names.mark:
        _close(cur, target)
        _alter(cur, target, "RENAME TO {}", staging)
        done.append(f"moved the restored database {target} back to {staging}")
        found = _of(cur, names)
    if target not in found and previous in found and not found[previous].staged_for_another(names):
        _alter(cur, previous, "RENAME TO {}", target)
        _open(cur, target)
        done.append(f"put {previous} back as {target}")
    return done


def mark_staged(cur: Cursor, names: SwapNames) -> None:
    """Claim the staging database just created: ``undo`` drops it only with this restore's mark, never a
    database that merely had its name."""
    _comment(cur, names.staging, names.staged)


def undo(cur: Cursor, names: SwapNames) -> list[str]:
    """Leave the target as it was before this restore, from whatever state a step left, and drop this
    restore's staging database. Idempotent; never touches a settled swap."""
    done = put_back(cur, names)
    staging = _of(cur, names).get(names.staging)
    if staging is not None and staging.marked_by(names):
        drop(cur, names.staging)
        done.append(f"dropped {names.staging}")
    return done


def clear_leftovers(cur: Cursor, names: SwapNames) -> list[str]:
    """What earlier restores of this target (other timestamps) left, found by name and taken only with a
    mark naming this target: a swap left unsettled is settled (the target may have taken writes since;
    both copies are kept), a swap left between two renames is completed backwards, and stale staging
    databases are dropped. Settled previous copies, and databases merely named alike, stay."""
    done = []
    any_time = names.at("00000000_000000")
    restore_stem, previous_stem = any_time.staging[:-15], any_time.previous[:-15]
    found = _databases(cur, (names.target,), (restore_stem, previous_stem))
    target = found.get(names.target)
    mark = target.mark_for(names.target) if target is not None else None
    if mark is not None and mark.step == _NOT_SETTLED and mark.timestamp != names.timestamp:
        settle(cur, names.at(mark.timestamp))
        done.append(f"settled the swap of an earlier restore ({mark.timestamp}) into {names.target}")
    if target is None:
        closed = sorted(
            (
                stamp
                for name, database in found.items()
                if (stamp := _stamp(name, previous_stem))
                and not database.open
                and not database.staged_for_another(names.at(stamp))
            ),
            reverse=True,
        )
        if closed:
            done += put_back(cur, names.at(closed[0]))
    for name, database in sorted(found.items()):
        stamp = _stamp(name, restore_stem)
        if stamp is None or name == names.staging:
            continue
        mark = database.mark_for(names.target)
        if mark is not None and mark.timestamp == stamp:
            drop(cur, name)
            done.append(f"dropped the staging database {name} of an earlier restore")
    return done


def _stamp(name: str, stem: str) -> str | None:
    """The timestamp ending ``name`` when it is ``stem`` followed by one, else None."""
    rest = name[len(stem) :]
    return rest if name.startswith(stem) and re.fullmatch(_TIMESTAMP, rest) else None


def drop(cur: Cursor, database: str) -> None:
    drop_database(cur, database)
    logger.info("postgres database dropped database=%s", database)
