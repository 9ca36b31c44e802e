"""Keeping secrets out of messages: URLs are shown without their passwords."""

from __future__ import annotations

import re
from traceback import format_exception
from urllib.parse import urlsplit, urlunsplit

# The password runs to the last "@" of the authority (as URL parsers split it), never past a "/".
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s]*@", re.IGNORECASE)
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\b(?:pg)?password\s*=\s*)(?:'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``; other text unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def redact_text(text: str) -> str:
    """Passwords out of any text that may quote a URL (``scheme://user:secret@``) or a libpq
    connection string (``password=secret``): for messages whose origin is not known."""
    return _KEYWORD_PASSWORD.sub(r"\g<head>***", _URL_PASSWORD.sub(r"\g<head>:***@", text))


def redacted_traceback(error: BaseException) -> str:
    """``error``'s traceback, as Python prints it, with the passwords its messages quote left out."""
    return redact_text("".join(format_exception(error)).rstrip())
