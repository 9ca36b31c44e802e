"""Keeping secrets out of messages: passwords quoted in URLs or conninfo, and every secret this process
has read (remembered with ``remember_secret``), are replaced by ``***`` wherever they appear. Display
strings for connection URLs are built from parsed fields instead (``connections``)."""

from __future__ import annotations

import logging
import re
import threading
from traceback import format_exception
from urllib.parse import quote, quote_plus

# The password runs to the last "@" of the authority (as URL parsers split it), never past a "/".
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s]*@", re.IGNORECASE)
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\b(?:pg)?password\s*=\s*)(?:'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
#: Shorter secrets are not replaced in free text: three characters would blank out ordinary words.
MIN_REMEMBERED_LENGTH = 4

_remembered: set[str] = set()
_remembered_lock = threading.Lock()


def remember_secret(secret: str) -> None:
    """From now on, ``redact_text`` replaces ``secret`` (as written, percent- and form-encoded) in this
    process. Whoever reads a password (the CLI, a Lambda's secrets) remembers it."""
    if len(secret) < MIN_REMEMBERED_LENGTH:
        return
    with _remembered_lock:
        _remembered.update({secret, quote(secret, safe=""), quote(secret), quote_plus(secret)})


def redact_text(text: str) -> str:
    """Passwords out of any text that may quote a URL (``scheme://user:secret@``), a libpq connection
    string (``password=secret``) or a remembered secret: for messages whose origin is not known."""
    with _remembered_lock:
        known = sorted(_remembered, key=len, reverse=True)  # a secret before the secrets it contains
    for secret in known:
        text = text.replace(secret, "***")
    return _KEYWORD_PASSWORD.sub(r"\g<head>***", _URL_PASSWORD.sub(r"\g<head>:***@", text))


def redacted_traceback(error: BaseException) -> str:
    """``error``'s traceback, as Python prints it, with the passwords its messages quote left out."""
    return redact_text("".join(format_exception(error)).rstrip())


class RedactingFilter(logging.Filter):
    """Attached to a handler: each record's message (arguments merged in) is redacted before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
