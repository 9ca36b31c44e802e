"""Connection URLs for PostgreSQL and Redis: parsed, rebuilt with another database or password, shown
without secrets. Nothing here cuts a URL as a string: libpq's parser (psycopg2's ``parse_dsn``, for URIs
and ``key=value`` conninfo alike) and redis-py's ``parse_url`` read them, and URLs are rebuilt from fields.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import psycopg2
from psycopg2.extensions import parse_dsn

from questboard_backup.errors import ConfigurationError
from questboard_backup.redaction import remember_secret

#: libpq keywords that hold secrets: never shown.
POSTGRES_SECRET_KEYS = frozenset({"password", "sslpassword"})
#: libpq keywords an RDS-style field-form secret may carry besides host, port, username, password, dbname.
POSTGRES_SECRET_FIELDS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "sslpassword",
    "channel_binding",
    "gssencmode",
    "application_name",
    "options",
    "connect_timeout",
    "target_session_attrs",
)
#: Field names of a Redis secret whose true value means TLS (``rediss://``), ElastiCache's among them.
REDIS_TLS_FIELDS = ("tls", "ssl", "transit_encryption_enabled", "TransitEncryptionEnabled")
#: redis-py connection arguments a field-form Redis secret may carry as URL query parameters.
REDIS_SECRET_FIELDS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_check_hostname")
_POSTGRES_URL_KEYS = frozenset({"user", "password", "host", "port", "dbname"})
#: How to write a password that breaks a URL, for the messages that refuse one.
PERCENT_HINT = "percent-encode '@', '#', '?', '/', '%' and ':' in a password"


# -- PostgreSQL ---------------------------------------------------------------------------------------


def parse_postgres(url: str, what: str = "the PostgreSQL URL") -> dict[str, str]:
    """libpq's reading of a ``postgresql://`` URI or ``key=value`` conninfo; an error never quotes it."""
    try:
        return dict(parse_dsn(url))
    except (psycopg2.ProgrammingError, TypeError):
        raise ConfigurationError(f"{what} cannot be parsed ({PERCENT_HINT})") from None


def postgres_url(params: Mapping[str, str]) -> str:
    """A ``postgresql://`` URI that libpq reads back as exactly ``params``."""
    params = {key: str(value) for key, value in params.items()}
    query = {key: value for key, value in params.items() if key not in _POSTGRES_URL_KEYS}
    user, password = params.get("user"), params.get("password")
    userinfo = ""
    if user is not None:
        userinfo = (
            quote(user, safe="") + (f":{quote(password, safe='')}" if password is not None else "") + "@"
        )
    elif password is not None:
        query["password"] = password
    host, port = params.get("host"), params.get("port")
    netloc = ""
    if host is not None and _single_host(host) and (port is None or port.isdigit()):
        netloc = f"[{host}]" if ":" in host else quote(host, safe=".-_")
        netloc += f":{port}" if port else ""
    else:  # several hosts, a socket folder: libpq takes them as parameters
        query.update({key: value for key, value in (("host", host), ("port", port)) if value is not None})
    path = "/" + quote(params["dbname"], safe="") if "dbname" in params else ""
    return f"postgresql://{userinfo}{netloc}{path}" + (f"?{_query(query.items())}" if query else "")


def postgres_with(url: str, *, database: str | None = None, password: str | None = None) -> str:
    """``url`` with another database and/or password; every other parameter (sslmode, sslrootcert,
    application_name, ...) kept."""
    params = parse_postgres(url)
    if database is not None:
        params["dbname"] = database
    if password is not None:
        params["password"] = password
    return postgres_url(params)


def postgres_display(url: str) -> str:
    """``url`` as an operator may see it: from its parsed fields, without any password."""
    try:
        params = parse_postgres(url)
    except ConfigurationError:
        return "<unparseable PostgreSQL URL>"
    return postgres_url({key: value for key, value in params.items() if key not in POSTGRES_SECRET_KEYS})


def postgres_url_from_secret(secret: str, what: str = "the database secret") -> str:
    """The URL a Secrets Manager secret describes: ``{"url": ...}``, a bare URL, or RDS field form
    (``host``, ``port``, ``username``, ``password``, ``dbname`` and libpq's ``sslmode``, ``sslrootcert``
    ...; ``"ssl": true`` alone means ``sslmode=require``). Its passwords are remembered for redaction."""
    body = _secret_body(secret, what)
    if "url" in body:
        url = str(body["url"])
        params = parse_postgres(url, f"the 'url' of {what}")
        _remember(params.get(key) for key in POSTGRES_SECRET_KEYS)
        return postgres_url(params)
    if not body.get("host"):
        raise ConfigurationError(f"{what} has neither 'url' nor 'host'")
    fields = {
        "host": body.get("host"),
        "port": body.get("port"),
        "user": body.get("username", body.get("user")),
        "password": body.get("password"),
        "dbname": body.get("dbname"),
        **{key: body.get(key) for key in POSTGRES_SECRET_FIELDS},
    }
    params = {key: _field_text(value) for key, value in fields.items() if value not in (None, "")}
    if "sslmode" not in params and any(_true(body.get(key)) for key in ("ssl", "tls")):
        params["sslmode"] = "require"
    _remember(params.get(key) for key in POSTGRES_SECRET_KEYS)
    url = postgres_url(params)
    parse_postgres(url, f"the fields of {what}")
    return url


def _single_host(host: str) -> bool:
    return bool(host) and "," not in host and not host.startswith("/") and "/" not in host


# -- Redis --------------------------------------------------------------------------------------------


def parse_redis(url: str, what: str = "the Redis URL") -> dict[str, Any]:
    """redis-py's reading of a ``redis://``, ``rediss://`` or ``unix://`` URL; an error never quotes it."""
    try:
        from redis.connection import parse_url  # redis-py costs 65 ms to import: only when needed

        return dict(parse_url(url))
    except (ValueError, TypeError, AttributeError):
        raise ConfigurationError(
            f"{what} cannot be parsed (redis://, rediss:// or unix://; {PERCENT_HINT})"
        ) from None


def redis_with(url: str, *, db: int | None = None, password: str | None = None) -> str:
    """``url`` with another logical db and/or password; scheme (TLS), user, host, port and every query
    parameter kept. A ``?db=`` parameter, which redis-py prefers to the path, is replaced too."""
    parse_redis(url)
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    path, netloc = parts.path, parts.netloc
    if db is not None:
        query = [(key, value) for key, value in query if key != "db"]
        if parts.scheme == "unix":
            query.append(("db", str(db)))
        else:
            path = f"/{db}"
    if password is not None:
        user = quote(parts.username or "", safe="")
        netloc = f"{user}:{quote(password, safe='')}@{_redis_host_port(parts)}"
    rebuilt = f"{parts.scheme}://{netloc}{path}" + (f"?{_query(query)}" if query else "")
    parse_redis(rebuilt)
    return rebuilt


def redis_display(url: str) -> str:
    """``url`` as an operator may see it: scheme, user, host, port and db from its parsed fields."""
    try:
        params = parse_redis(url)
    except ConfigurationError:
        return "<unparseable Redis URL>"
    scheme = urlsplit(url).scheme
    db = params.get("db", 0)
    if scheme == "unix":
        return f"unix://{quote(str(params.get('path', '')), safe='/')}?db={db}"
    user = quote(str(params["username"]), safe="") + "@" if params.get("username") else ""
    host = str(params.get("host", "localhost"))
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{user}{host}:{params.get('port', 6379)}/{db}"


def redis_url_from_secret(secret: str, what: str = "the Redis secret") -> str:
    """The URL a secret describes: ``{"url": ...}``, a bare URL, or fields (``host``, ``port``,
    ``username``, ``password`` or ``auth_token``, ``db``; ``tls``/``ssl``/``transit_encryption_enabled``
    true means ``rediss://``; ``ssl_cert_reqs``, ``ssl_ca_certs``). Its password is remembered."""
    body = _secret_body(secret, what)
    if "url" in body:
        url = str(body["url"])
        params = parse_redis(url, f"the 'url' of {what}")
        _remember([params.get("password")])
        return url
    if not body.get("host"):
        raise ConfigurationError(f"{what} has neither 'url' nor 'host'")
    password = body.get("password", body.get("auth_token"))
    _remember([_field_text(password) if password not in (None, "") else None])
    tls = any(_true(body.get(key)) for key in REDIS_TLS_FIELDS)
    user = _field_text(body.get("username") or "")
    credentials = ""
    if user or password not in (None, ""):
        secret_part = f":{quote(_field_text(password), safe='')}" if password not in (None, "") else ""
        credentials = f"{quote(user, safe='')}{secret_part}@"
    host = _field_text(body["host"])
    host = f"[{host}]" if ":" in host else quote(host, safe=".-_")
    port = f":{_field_text(body['port'])}" if body.get("port") not in (None, "") else ""
    query = {key: _field_text(body[key]) for key in REDIS_SECRET_FIELDS if body.get(key) not in (None, "")}
    url = f"{'rediss' if tls else 'redis'}://{credentials}{host}{port}/{_field_text(body.get('db', 0))}"
    url += f"?{_query(query.items())}" if query else ""
    parse_redis(url, f"the fields of {what}")
    return url


def _query(pairs: Iterable[tuple[str, str]]) -> str:
    # "/" and ":" stay readable (certificate paths); "&", "=", "#", "%", "?", "@" and "+" are encoded.
    return "&".join(f"{quote(key, safe='')}={quote(value, safe='/:,')}" for key, value in pairs)


def password_of(url: str) -> str | None:
    """The password a PostgreSQL or Redis URL carries (None when it has none or cannot be parsed)."""
    try:
        if urlsplit(url).scheme in ("redis", "rediss", "unix"):
            return parse_redis(url).get("password")
        return parse_postgres(url).get("password")
    except (ConfigurationError, ValueError):
        return None


def _redis_host_port(parts: Any) -> str:
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parts.port}" if parts.port else host


# -- secrets ------------------------------------------------------------------------------------------


def _secret_body(secret: str, what: str) -> dict[str, Any]:
    """A secret's JSON object, or ``{"url": text}`` for a bare URL. Whatever it holds is remembered
    for redaction before anything can fail, so not even a malformed secret is ever echoed."""
    remember_secret(secret.strip())
    try:
        body = json.loads(secret)
    except ValueError:
        return {"url": secret.strip()}
    if not isinstance(body, dict):
        raise ConfigurationError(f"{what} is neither a URL nor a JSON object")
    return body


def _remember(values: Any) -> None:
    for value in values:
        if value:
            remember_secret(str(value))


def _field_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _true(value: Any) -> bool:
    return value is True or str(value).strip().lower() in {"1", "true", "yes", "on", "required"}
