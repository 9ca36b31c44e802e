"""Cryptography of backups: the authenticated stream format and the wrapping of data keys.

Nothing else lives here: no storage, no sources. See docs/format.md for the byte layout.
"""
