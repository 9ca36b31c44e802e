"""How the roles a PostgreSQL backup expects read in one line (``backup.sh verify`` shows it)."""

from __future__ import annotations

from questboard_backup.sources.postgres.facts import describe_for_verify, describe_roles


def test_the_roles_read_as_one_line_in_the_order_recorded() -> None:
    facts = {"owner": "questboard", "roles": ["app_owner", "app_reader", "questboard"]}

    assert describe_roles(facts) == "roles: app_owner, app_reader, questboard"


def test_a_role_name_sql_would_quote_is_quoted() -> None:
    facts = {"roles": ["Guild Masters", "app", 'say "hi"', "Upper", "x$1"]}

    assert describe_roles(facts) == 'roles: "Guild Masters", app, "say ""hi""", "Upper", x$1'


def test_facts_recording_no_role_say_so() -> None:
    assert describe_roles({"roles": []}) == "roles: none"


def test_facts_of_a_backup_taken_before_roles_were_recorded_describe_nothing() -> None:
    assert describe_roles({"owner": "postgres", "tables": {}}) is None


def test_verify_tells_the_roles_or_for_an_older_backup_the_database_owner() -> None:
    assert describe_for_verify({"owner": "q", "roles": ["Upper", "app"]}) == 'roles: "Upper", app'
    assert describe_for_verify({"owner": "Guild"}) == 'database owner "Guild" (roles not recorded)'
    assert describe_for_verify({"tables": {}}) is None
