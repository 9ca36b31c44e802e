"""What a restore needs of the role it connects as, checked before it creates or reads anything: CREATEDB
for the staging database, and, when the target exists, its ownership (or superuser) to move it aside."""

from __future__ import annotations

from psycopg2.extensions import cursor as Cursor

from questboard_backup.errors import SourceUnreachableError
from questboard_backup.sources.postgres.facts import failing_as, one


def require_restore_privileges(cur: Cursor, target: str) -> None:
    """Raise SourceUnreachableError, in one line naming the role and what it lacks, unless the role of
    ``cur``'s session can create databases and, if the database ``target`` exists, owns it (directly or
    by a role it inherits from, as ``ALTER DATABASE`` counts ownership) or is a superuser."""
    with failing_as(f"cannot check the privileges to restore into {target}"):
        cur.execute(
            "SELECT r.rolname, quote_ident(r.rolname), r.rolsuper, r.rolcreatedb, d.datname IS NOT NULL, "
            "pg_get_userbyid(d.datdba), coalesce(pg_has_role(d.datdba, 'USAGE'), false) "
            "FROM pg_roles r LEFT JOIN pg_database d ON d.datname = %s WHERE r.rolname = current_user",
            (target,),
        )
        role, quoted_role, superuser, createdb, exists, owner, owns = one(cur)
    if superuser:
        return
    missing = []
    if not createdb:
        missing.append(f"it lacks CREATEDB (grant it: ALTER ROLE {quoted_role} CREATEDB)")
    if exists and not owns:
        missing.append(
            f'it does not own database "{target}" (owner: "{owner}"); restore as its owner or a superuser'
        )
    if missing:
        raise SourceUnreachableError(
            f'role "{role}" cannot restore into "{target}": ' + " and ".join(missing)
        )
