"""The cluster's roles, backed up beside the database and created on a target server that lacks them, so
that owners and grants come back as dumped.

What ``pg_dumpall --globals-only --no-role-passwords`` writes of roles, read from the catalogs every
role may read (``pg_roles``, ``pg_auth_members``, ``pg_db_role_setting``: also on RDS), and kept as JSON
rather than SQL, so that a restore creates only what is missing and leaves out, with a warning, what
the target does not allow. Passwords are not read (the restore creates roles without one), nor are
tablespaces, role settings ``IN DATABASE`` or ``GRANT ... ON PARAMETER``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

from questboard_backup.errors import IntegrityError
from questboard_backup.sources.postgres.facts import one
from questboard_backup.sources.postgres.tools import first_line

logger = logging.getLogger(__name__)

FORMAT = "questboard-backup/postgres-roles"
VERSION = 1
#: The roles of a cluster take kilobytes; a part claiming more is not one this module wrote.
MAX_BYTES = 16 * 2**20
#: Attributes as CREATE ROLE spells them, by their pg_roles column.
_ATTRIBUTES = {
    "superuser": "SUPERUSER",
    "createrole": "CREATEROLE",
    "createdb": "CREATEDB",
    "login": "LOGIN",
    "replication": "REPLICATION",
    "bypassrls": "BYPASSRLS",
}
#: Settings whose values are lists of quoted elements (pg_dump's variable_is_guc_list_quote).
_LIST_SETTINGS = {
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
}


def _version(cur: Cursor) -> int:
    cur.execute("SELECT current_setting('server_version_num')::int")
    return int(one(cur)[0])


def read_roles(cur: Cursor) -> bytes:
    """The cluster's roles (but the built-in ``pg_`` ones), their attributes, settings and memberships,
    as the JSON document a restore reads back (``create_missing_roles``)."""
    version = _version(cur)
    cur.execute(
        "SELECT r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, "
        "r.rolreplication, r.rolbypassrls, r.rolconnlimit, r.rolvaliduntil::text, "
        "coalesce((SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setrole = r.oid AND s.setdatabase = 0), "
        "'{}') FROM pg_roles r WHERE r.rolname !~ '^pg_' ORDER BY 1"
    )
    roles = []
    for (
        name,
        superuser,
        inherit,
        createrole,
        createdb,
        login,
        replication,
        bypassrls,
        limit,
        until,
        settings,
    ) in cur.fetchall():
        roles.append(
            {
                "name": name,
                "superuser": superuser,
                "inherit": inherit,
                "createrole": createrole,
                "createdb": createdb,
                "login": login,
                "replication": replication,
                "bypassrls": bypassrls,
                "connection_limit": limit,
                "valid_until": until,
                "settings": list(settings),
            }
        )
    # From 16 on, a membership may be granted several times (by different grantors), each with options.
    options = "bool_or(m.inherit_option), bool_or(m.set_option)" if version >= 160000 else "NULL, NULL"
    cur.execute(
        f"SELECT r.rolname, u.rolname, bool_or(m.admin_option), {options} FROM pg_auth_members m "
        "JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member "
        "WHERE u.rolname !~ '^pg_' GROUP BY 1, 2 ORDER BY 1, 2"
    )
    memberships = [
        {"role": role, "member": member, "admin": admin, "inherit": inherit, "set": set_option}
        for role, member, admin, inherit, set_option in cur.fetchall()
    ]
    document = {"format": FORMAT, "version": VERSION, "roles": roles, "memberships": memberships}
    return json.dumps(document, ensure_ascii=False, sort_keys=True).encode()


def parse_roles(data: bytes) -> dict[str, Any]:
    """The document ``read_roles`` wrote; IntegrityError if it is not one."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IntegrityError("postgres: the roles part is not JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise IntegrityError("postgres: the roles part is not a roles document")
    if document.get("version") != VERSION:
        raise IntegrityError(f"postgres: roles document version {document.get('version')!r} is not {VERSION}")
    return document


def create_missing_roles(cur: Cursor, document: Mapping[str, Any]) -> list[str]:
    """Create the document's roles that the server lacks, with their attributes and settings, then the
    memberships that involve a role created here. Existing roles are left as they are (attributes,
    passwords, settings). What the connected role may not grant (SUPERUSER when it is no superuser, as
    on RDS) is left out with a warning, as is a statement the server refuses. A restoring role that is
    no superuser becomes a member of the roles it creates, so that it can make them owners (as RDS's
    master user must be). Returns the roles created."""
    cur.execute(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles "
        "WHERE rolname = current_user"
    )
    superuser, createrole, createdb, replication, bypassrls = one(cur)
    version = _version(cur)
    mine = {
        "createrole": createrole,
        "createdb": createdb,
        "replication": replication,
        "bypassrls": bypassrls,
    }
    cur.execute("SELECT rolname FROM pg_roles")
    existing = {str(name) for (name,) in cur.fetchall()}
    created: list[str] = []
    if not superuser and version >= 160000:
        # A role that is no superuser sets an object's owner (pg_restore's ALTER ... OWNER TO) only to a
        # role it can SET ROLE to: from 16 on, it becomes a member of the roles it creates only if asked.
        cur.execute("SET createrole_self_grant = 'set, inherit'")
    for role in document["roles"]:
        name = str(role["name"])
        if name in existing or name.startswith("pg_"):
            continue
        if not superuser and not createrole:
            logger.warning(
                "postgres role not created role=%s reason=the restoring role lacks CREATEROLE", name
            )
            continue
        wanted = [key for key in _ATTRIBUTES if role.get(key)]
        allowed = wanted if superuser else [key for key in wanted if _grantable(key, mine, version)]
        if skipped := [_ATTRIBUTES[key] for key in wanted if key not in allowed]:
            logger.warning(
                "postgres role attributes skipped role=%s attributes=%s reason=not allowed to the restoring role",
                name,
                " ".join(skipped),
            )
        if _execute(cur, _create_role(role, allowed), "role not created", name):
            created.append(name)
            existing.add(name)
            if not superuser and version < 160000:  # as createrole_self_grant does from 16 on
                grant = sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(name))
                _execute(cur, grant, "role membership skipped", f"{name} to the restoring role")
            for setting in role.get("settings", []):
                _execute(cur, _role_setting(name, str(setting)), "role setting skipped", name)
    for membership in document["memberships"]:
        role, member = str(membership["role"]), str(membership["member"])
        if (role in created or member in created) and {role, member} <= existing:
            _execute(cur, _grant(membership, version), "role membership skipped", f"{role} to {member}")
    if created:
        logger.info("postgres roles created roles=%s", ", ".join(created))
    return created


def _grantable(attribute: str, mine: Mapping[str, bool], version: int) -> bool:
    """What a role with CREATEROLE but not SUPERUSER may give a role it creates: before 16, all but
    SUPERUSER, REPLICATION and BYPASSRLS; from 16, only the attributes it has itself."""
    if attribute == "superuser":
        return False
    if version >= 160000:
        return attribute == "login" or bool(mine.get(attribute))
    return attribute not in ("replication", "bypassrls")


def _create_role(role: Mapping[str, Any], attributes: list[str]) -> sql.Composed:
    words = [sql.SQL(_ATTRIBUTES[key]) for key in attributes]
    if not role.get("inherit", True):
        words.append(sql.SQL("NOINHERIT"))
    if role.get("connection_limit", -1) != -1:
        words.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(int(role["connection_limit"]))))
    if role.get("valid_until"):
        words.append(sql.SQL("VALID UNTIL {}").format(sql.Literal(str(role["valid_until"]))))
    statement = sql.SQL("CREATE ROLE {}").format(sql.Identifier(str(role["name"])))
    return statement + sql.SQL(" WITH ") + sql.SQL(" ").join(words) if words else statement


def _role_setting(role: str, setting: str) -> sql.Composed:
    """``ALTER ROLE role SET name TO value`` from a ``name=value`` entry of ``pg_db_role_setting``."""
    name, _, value = setting.partition("=")
    if name.lower() in _LIST_SETTINGS:
        items = split_setting_list(value)
        values = sql.SQL(", ").join(map(sql.Literal, items)) if items else sql.Literal("")
    else:
        values = sql.Literal(value)
    return sql.SQL("ALTER ROLE {} SET {} TO {}").format(sql.Identifier(role), sql.Identifier(name), values)


def split_setting_list(value: str) -> list[str]:
    """The elements of a list setting as the catalog stores it (``"$user", public``), as PostgreSQL's
    SplitGUCList reads it: separated by commas, each double-quoted (``""`` inside for ``"``) or bare."""
    items: list[str] = []
    rest = value.strip()
    while rest:
        if rest.startswith('"'):
            item, position = [], 1
            while True:
                end = rest.find('"', position)
                if end < 0:
                    raise IntegrityError(f"postgres: unreadable list setting value {value!r}")
                item.append(rest[position:end])
                if rest[end + 1 : end + 2] != '"':
                    break
                item.append('"')
                position = end + 2
            items.append("".join(item))
            rest = rest[end + 1 :].lstrip()
        else:
            word = rest.split(",", 1)[0].strip()
            items.append(word)
            rest = rest[len(rest.split(",", 1)[0]) :].lstrip()
        if rest and not rest.startswith(","):
            raise IntegrityError(f"postgres: unreadable list setting value {value!r}")
        rest = rest[1:].lstrip()
    return items


def _grant(membership: Mapping[str, Any], version: int) -> sql.Composed:
    statement = sql.SQL("GRANT {} TO {}").format(
        sql.Identifier(str(membership["role"])), sql.Identifier(str(membership["member"]))
    )
    if version >= 160000:
        options = [("ADMIN", membership.get("admin"))]
        options += [(key.upper(), membership.get(key)) for key in ("inherit", "set")]
        chosen = [
            sql.SQL(f"{key} {'TRUE' if value else 'FALSE'}") for key, value in options if value is not None
        ]
        return statement + sql.SQL(" WITH ") + sql.SQL(", ").join(chosen)
    return statement + sql.SQL(" WITH ADMIN OPTION") if membership.get("admin") else statement


def _execute(cur: Cursor, statement: sql.Composed, failure: str, what: str) -> bool:
    """Run one statement (the session autocommits: each on its own); a refusal is logged, not raised."""
    try:
        cur.execute(statement)
    except psycopg2.Error as error:
        logger.warning("postgres %s what=%s error=%s", failure, what, first_line(error))
        return False
    return True
