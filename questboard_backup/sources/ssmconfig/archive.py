"""The ssmconfig stream: a PAX tar with one member per parameter and per secret, the value as its content.

- ``parameters/{i}/{name below path i}``: a parameter under the i-th configured path; PAX headers
  ``QB.ssm.Type`` (String, StringList, SecureString) and, where set, ``QB.ssm.KeyId``,
  ``QB.ssm.Description``, ``QB.ssm.AllowedPattern``, ``QB.ssm.DataType``, ``QB.ssm.Tier``.
- ``secrets/{i}``: the i-th configured secret's current value; ``QB.secret.Kind`` (``string`` or
  ``binary``) and, where set, ``QB.secret.KmsKeyId``.

The engine compresses and encrypts the stream: a SecureString's plaintext exists only inside it. Reading
checks every member before anything is kept (names, types, sizes, no duplicates).
"""

from __future__ import annotations

import io
import re
import tarfile
from dataclasses import dataclass, field
from typing import NoReturn

from questboard_backup.errors import IntegrityError
from questboard_backup.sources.base import StreamOpener
from questboard_backup.sources.tar_reading import next_member, open_archive

PARAMETER_TYPES = ("String", "StringList", "SecureString")
SECRET_KINDS = ("string", "binary")
#: The largest value either service holds (a secret: 64 KiB; a parameter: 8 KiB); bounds what is read.
VALUE_LIMIT = 64 * 1024
#: A parameter name below its path: ``/segment/segment``, of the characters SSM allows.
RELATIVE_NAME = re.compile(r"(/[A-Za-z0-9_.\-]+)+")
PARAMETER_HEADERS = {
    "key_id": "QB.ssm.KeyId",
    "description": "QB.ssm.Description",
    "allowed_pattern": "QB.ssm.AllowedPattern",
    "data_type": "QB.ssm.DataType",
    "tier": "QB.ssm.Tier",
}
TYPE_HEADER = "QB.ssm.Type"
KIND_HEADER, KMS_HEADER = "QB.secret.Kind", "QB.secret.KmsKeyId"


@dataclass(frozen=True)
class Parameter:
    """A parameter, its value never in its repr."""

    name: str
    type: str
    value: str = field(repr=False)
    key_id: str = ""
    description: str = ""
    allowed_pattern: str = ""
    data_type: str = ""
    tier: str = ""

    def put_args(self) -> dict[str, str]:
        """PutParameter's arguments for this parameter (Overwrite and Tags are the caller's)."""
        args = {"Name": self.name, "Value": self.value, "Type": self.type}
        if self.type == "SecureString" and self.key_id:
            args["KeyId"] = self.key_id
        if self.description:
            args["Description"] = self.description
        if self.allowed_pattern:
            args["AllowedPattern"] = self.allowed_pattern
        if self.data_type:
            args["DataType"] = self.data_type
        if self.tier == "Advanced":  # a Standard parameter becomes Advanced when it must, never back
            args["Tier"] = self.tier
        return args


@dataclass(frozen=True)
class Secret:
    """A secret's value (text or bytes), never in its repr."""

    secret_id: str
    string: str | None = field(default=None, repr=False)
    binary: bytes | None = field(default=None, repr=False)
    kms_key_id: str = ""

    def value_args(self) -> dict[str, str | bytes]:
        return (
            {"SecretString": self.string} if self.string is not None else {"SecretBinary": self.binary or b""}
        )


@dataclass
class Contents:
    """What a stream holds: parameters by path index (names below the path), secrets by index."""

    parameters: dict[int, list[Parameter]] = field(default_factory=dict)
    secrets: dict[int, Secret] = field(default_factory=dict)

    @property
    def parameter_count(self) -> int:
        return sum(len(items) for items in self.parameters.values())


def add_parameter(tar: tarfile.TarFile, index: int, relative: str, parameter: Parameter) -> int:
    headers = {TYPE_HEADER: parameter.type}
    headers.update(
        {
            header: getattr(parameter, key)
            for key, header in PARAMETER_HEADERS.items()
            if getattr(parameter, key)
        }
    )
    return _add(tar, f"parameters/{index}{relative}", parameter.value.encode(), headers)


def add_secret(tar: tarfile.TarFile, index: int, secret: Secret) -> int:
    headers = {KIND_HEADER: "string" if secret.string is not None else "binary"}
    if secret.kms_key_id:
        headers[KMS_HEADER] = secret.kms_key_id
    data = secret.string.encode() if secret.string is not None else secret.binary or b""
    return _add(tar, f"secrets/{index}", data, headers)


def _add(tar: tarfile.TarFile, name: str, data: bytes, headers: dict[str, str]) -> int:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode = tarfile.REGTYPE, len(data), 0o600
    info.pax_headers = headers
    tar.addfile(info, io.BytesIO(data))
    return len(data)


def read(label: str, open_stream: StreamOpener, path_count: int, secret_count: int) -> Contents:
    """Read the stream to its authenticated end, checking every member; nothing is returned before the
    end authenticated (the opener raises IntegrityError otherwise)."""
    contents = Contents()
    names: set[tuple[int, str]] = set()
    with open_stream() as reader, open_archive(label, reader) as tar:
        while (member := next_member(label, tar)) is not None:
            data = _content(label, tar, member)
            head, _, rest = member.name.partition("/")
            if head == "parameters":
                index_text, slash, relative = rest.partition("/")
                index = _index(label, member.name, index_text, path_count)
                relative = slash + relative
                if not RELATIVE_NAME.fullmatch(relative):
                    _refuse(label, member.name, "not a parameter name")
                if (index, relative) in names:
                    _refuse(label, member.name, "duplicate")
                names.add((index, relative))
                contents.parameters.setdefault(index, []).append(_parameter(label, member, relative, data))
            elif head == "secrets":
                index = _index(label, member.name, rest, secret_count)
                if index in contents.secrets:
                    _refuse(label, member.name, "duplicate")
                contents.secrets[index] = _secret(label, member, data)
            else:
                _refuse(label, member.name, "neither a parameter nor a secret")
    return contents


def _parameter(label: str, member: tarfile.TarInfo, relative: str, data: bytes) -> Parameter:
    kind = member.pax_headers.get(TYPE_HEADER, "")
    if kind not in PARAMETER_TYPES:
        _refuse(label, member.name, "unknown parameter type")
    optional = {key: member.pax_headers.get(header, "") for key, header in PARAMETER_HEADERS.items()}
    return Parameter(relative, kind, _text(label, member.name, data), **optional)


def _secret(label: str, member: tarfile.TarInfo, data: bytes) -> Secret:
    kind = member.pax_headers.get(KIND_HEADER, "")
    if kind not in SECRET_KINDS:
        _refuse(label, member.name, "unknown secret kind")
    kms = member.pax_headers.get(KMS_HEADER, "")
    if kind == "binary":
        return Secret("", binary=data, kms_key_id=kms)
    return Secret("", string=_text(label, member.name, data), kms_key_id=kms)


def _text(label: str, name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        _refuse(label, name, "value is not UTF-8 text")


def _index(label: str, name: str, text: str, count: int) -> int:
    if (
        not (text.isascii() and text.isdigit() and len(text) < 10 and str(int(text)) == text)
        or int(text) >= count
    ):
        _refuse(label, name, "unknown path or secret number")
    return int(text)


def _content(label: str, tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if not member.isreg():
        _refuse(label, member.name, "not a regular file")
    if member.size > VALUE_LIMIT:
        _refuse(label, member.name, f"larger than {VALUE_LIMIT} bytes")
    source = tar.extractfile(member)
    if source is None:
        _refuse(label, member.name, "no content")
    try:
        data = source.read()
    except tarfile.TarError as error:
        raise IntegrityError(f"{label}: archive entry {member.name!r} unreadable ({error})") from None
    if len(data) != member.size:
        _refuse(label, member.name, "content cut short")
    return data


def _refuse(label: str, name: str, reason: str) -> NoReturn:
    raise IntegrityError(f"{label}: archive entry {name!r} refused: {reason}")
