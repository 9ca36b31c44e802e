"""Configuration kept in AWS: SSM Parameter Store parameters under configured paths and Secrets Manager
secrets, backed up into the component's encrypted stream (archive.py) and written back on restore.

Where the values live, and why:

- A backup reads parameters decrypted (``WithDecryption``) and secrets' current values straight into the
  stream, which the engine compresses and encrypts. Values never reach the facts (counts, the configured
  paths and secret ids only), a log line or an error message (errors carry AWS error codes, not messages,
  which can quote values).
- ``stage`` reads and checks the whole stream and writes nothing anywhere: the checked values stay in
  this instance's memory until ``swap_in`` writes them. Staging them in AWS would mean a second copy of
  every SecureString outside its place; staging them on disk, plaintext outside the source systems. So a
  restore of this component stages and swaps in one process, as ``restore.run_restore`` does; a
  ``swap_in`` in a process that did not stage refuses (SourceError) and the restore is undone.
- ``swap_in`` keeps no copy of the values it replaces: it records, as tags on each parameter or secret it
  writes, the version that was current (parameters.py, secrets.py), plus one mark parameter per path
  beside it (``{path}.restore-{ts}``). ``undo`` reads those versions back from SSM's parameter history and
  Secrets Manager's versions and writes them again; ``settle`` removes the tags and marks; the previous
  versions stay in each service's own history. ``undo``, ``settle`` and ``clear_leftovers`` need nothing
  but the target and the timestamp, so any process can run them.

A restore writes each parameter back under the path it came from, or, when this target's configured paths
differ from the set's, under the configured path at the same position (likewise for secret ids). What the
target holds beyond the backup is left as it is. The facts: ``paths``, ``secret_ids``, ``parameters`` and
``secrets`` (the counts, checked on restore).
"""

from __future__ import annotations

import logging
import re
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

from questboard_backup.address import TIMESTAMP_PATTERN
from questboard_backup.errors import (
    BackupError,
    ConfigurationError,
    IntegrityError,
    RestoreVerificationError,
    SourceError,
    SourceUnreachableError,
)
from questboard_backup.pipeline import READ_SIZE
from questboard_backup.sources.base import Facts, PartOpener, RestoreOptions, StagedRestore, StreamOpener
from questboard_backup.sources.ssmconfig import archive
from questboard_backup.sources.ssmconfig.archive import Parameter, Secret
from questboard_backup.sources.ssmconfig.calls import default_client
from questboard_backup.sources.ssmconfig.parameters import ParameterStore
from questboard_backup.sources.ssmconfig.secrets import SecretStore

logger = logging.getLogger(__name__)

NAME = "ssmconfig"
_PATH = re.compile(r"(/[A-Za-z0-9_.\-]+)+")

ClientFactory = Callable[[str], Any]


@dataclass(frozen=True)
class _Staged:
    """A checked stream's values, mapped onto this target, held until ``swap_in`` (never written)."""

    timestamp: str
    parameters: dict[str, list[Parameter]]
    secrets: list[Secret]


class SsmConfigComponent(StagedRestore):
    """Back up SSM parameters under ``paths`` (recursively) and the Secrets Manager secrets ``secret_ids``;
    restore them into the paths and secrets this instance is bound to.

    ``client_factory`` builds a boto3 client from a service name (``"ssm"``, ``"secretsmanager"``);
    without one, clients are built on first use from the standard AWS configuration.
    """

    def __init__(
        self,
        paths: Sequence[str] = (),
        secret_ids: Sequence[str] = (),
        client_factory: ClientFactory | None = None,
        name: str = NAME,
    ) -> None:
        self.name = name
        self.parallel_streams = False
        self.paths = tuple(path.rstrip("/") for path in paths)
        self.secret_ids = tuple(secret_ids)
        problem = _configuration_problem(self.paths, self.secret_ids)
        if problem:
            raise ConfigurationError(f"{name}: {problem}")
        self._factory = client_factory or default_client
        self._parameter_store: ParameterStore | None = None
        self._secret_store: SecretStore | None = None
        self._staged: _Staged | None = None

    @property
    def parameter_store(self) -> ParameterStore:
        if self._parameter_store is None:
            self._parameter_store = ParameterStore(self.name, self._factory("ssm"))
        return self._parameter_store

    @property
    def secret_store(self) -> SecretStore:
        if self._secret_store is None:
            self._secret_store = SecretStore(self.name, self._factory("secretsmanager"))
        return self._secret_store

    def check(self) -> None:
        try:
            for path in self.paths:
                self.parameter_store.check(path)
            for secret_id in self.secret_ids:
                self.secret_store.check(secret_id, must_exist=True)
        except BackupError as error:
            raise SourceUnreachableError(str(error)) from None

    def check_restore_target(self) -> None:
        """The paths can be listed and the secrets described (a missing secret is created on restore)."""
        try:
            for path in self.paths:
                self.parameter_store.check(path)
            for secret_id in self.secret_ids:
                self.secret_store.check(secret_id, must_exist=False)
        except BackupError as error:
            raise SourceUnreachableError(str(error)) from None

    def dump(self, out: BinaryIO, open_part: PartOpener | None = None) -> Facts:
        """``open_part`` is not used: one stream."""
        parameters = secrets = 0
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=READ_SIZE) as tar:
            for index, path in enumerate(self.paths):
                found = 0
                for parameter in self.parameter_store.parameters(path):
                    archive.add_parameter(tar, index, parameter.name[len(path) :], parameter)
                    found += 1
                if not found:
                    logger.warning(
                        "no parameters under a configured path component=%s path=%s", self.name, path
                    )
                parameters += found
            for index, secret_id in enumerate(self.secret_ids):
                archive.add_secret(tar, index, self.secret_store.read(secret_id))
                secrets += 1
        logger.info(
            "configuration archived component=%s parameters=%d secrets=%d", self.name, parameters, secrets
        )
        return {
            "paths": list(self.paths),
            "secret_ids": list(self.secret_ids),
            "parameters": parameters,
            "secrets": secrets,
        }

    def stage(self, open_stream: StreamOpener, facts: Mapping[str, Any], options: RestoreOptions) -> Facts:
        _check_timestamp(options)
        paths, secret_ids = _strings(facts.get("paths")), _strings(facts.get("secret_ids"))
        counts = {key: facts.get(key) for key in ("parameters", "secrets")}
        if (
            paths is None
            or secret_ids is None
            or not all(type(value) is int and value >= 0 for value in counts.values())
        ):
            raise IntegrityError(f"{self.name}: the manifest facts hold no paths, secret ids and counts")
        problem = _configuration_problem(tuple(paths), tuple(secret_ids))
        if problem:
            raise IntegrityError(f"{self.name}: manifest facts refused: {problem}")
        target_paths = _targets(self.name, "SSM paths", paths, self.paths)
        target_secrets = _targets(self.name, "secret ids", secret_ids, self.secret_ids)
        self._staged = None
        contents = archive.read(self.name, open_stream, len(paths), len(secret_ids))
        found = {"parameters": contents.parameter_count, "secrets": len(contents.secrets)}
        problems = [
            f"{key} {counts[key]} expected, {found[key]} found" for key in counts if counts[key] != found[key]
        ]
        if problems:
            raise RestoreVerificationError(
                f"{self.name}: archive does not match the manifest: {'; '.join(problems)}"
            )
        self._staged = _Staged(
            options.timestamp,
            {
                path: [
                    replace(parameter, name=path + parameter.name)
                    for parameter in contents.parameters.get(index, [])
                ]
                for index, path in enumerate(target_paths)
            },
            [
                replace(contents.secrets[index], secret_id=secret_id)
                for index, secret_id in enumerate(target_secrets)
                if index in contents.secrets
            ],
        )
        logger.info(
            "configuration staged component=%s parameters=%d secrets=%d",
            self.name,
            found["parameters"],
            found["secrets"],
        )
        return {"paths": list(target_paths), "secret_ids": list(target_secrets), **found}

    def swap_in(self, options: RestoreOptions) -> Facts:
        staged = self._staged
        if staged is None or staged.timestamp != options.timestamp:
            raise SourceError(
                f"{self.name}: nothing staged in this process for the restore {options.timestamp}: "
                "this component stages and swaps in one process (its values are never written to staging)"
            )
        for path in staged.parameters:
            if self.parameter_store.mark(path, options.timestamp) is not None:
                raise SourceError(f"{self.name}: {path} is already swapped in and not settled")
        previous_parameters: dict[str, int | None] = {}
        previous_secrets: dict[str, str | None] = {}
        unchanged = 0
        try:
            for path, parameters in staged.parameters.items():
                written, same = self.parameter_store.swap_in(path, options.timestamp, parameters)
                previous_parameters.update(written)
                unchanged += same
            for secret in staged.secrets:
                version, wrote = self.secret_store.swap_in(secret, options.timestamp)
                if wrote:
                    previous_secrets[secret.secret_id] = version
                else:
                    unchanged += 1
        except BaseException:
            # Put back what was written; the swap's own failure is the one raised (a failed put back
            # is logged here, and the engine's undo tries again).
            try:
                lines = self._put_back(
                    list(staged.parameters), [secret.secret_id for secret in staged.secrets], options
                )
            except BackupError:
                lines = []
            for line in lines:
                logger.warning("swap undone component=%s what=%s", self.name, line)
            raise
        finally:
            self._staged = None  # the values are in place, or the restore is being undone
        return {
            "previous": {"parameters": previous_parameters, "secrets": previous_secrets},
            "unchanged": unchanged,
        }

    def settle(self, options: RestoreOptions) -> None:
        try:
            _check_timestamp(options)
        except ConfigurationError as error:
            logger.error("swap not settled component=%s error=%s", self.name, error)
            return
        for path in self.paths:
            try:
                self.parameter_store.settle(path, options.timestamp)
            except BackupError as error:
                logger.error("swap not settled component=%s path=%s error=%s", self.name, path, error)
        for secret_id in self.secret_ids:
            try:
                self.secret_store.settle(secret_id, options.timestamp)
            except BackupError as error:
                logger.error("swap not settled component=%s secret=%s error=%s", self.name, secret_id, error)

    def undo(self, options: RestoreOptions) -> list[str]:
        _check_timestamp(options)
        self._staged = None
        return self._put_back(self.paths, self.secret_ids, options)

    def clear_leftovers(self, options: RestoreOptions) -> list[str]:
        _check_timestamp(options)
        lines: list[str] = []
        for path in self.paths:
            lines.extend(self.parameter_store.clear_leftovers(path, options.timestamp))
        for secret_id in self.secret_ids:
            lines.extend(self.secret_store.clear_leftovers(secret_id, options.timestamp))
        return [f"{self.name}: {line}" for line in lines]

    def _put_back(
        self, paths: Sequence[str], secret_ids: Sequence[str], options: RestoreOptions
    ) -> list[str]:
        """Undo this restore's swaps on every path and secret, each on its own: one that fails does not
        stop the others; the first failure is raised once all were tried."""
        lines: list[str] = []
        failures: list[BackupError] = []
        for path in paths:
            try:
                lines.extend(self.parameter_store.put_back(path, options.timestamp))
            except BackupError as error:
                logger.error("restore not undone component=%s path=%s error=%s", self.name, path, error)
                failures.append(error)
        for secret_id in secret_ids:
            try:
                lines.extend(self.secret_store.put_back(secret_id, options.timestamp))
            except BackupError as error:
                logger.error(
                    "restore not undone component=%s secret=%s error=%s", self.name, secret_id, error
                )
                failures.append(error)
        if failures:
            raise failures[0]
        return [f"{self.name}: {line}" for line in lines]


def _check_timestamp(options: RestoreOptions) -> None:
    if not re.fullmatch(TIMESTAMP_PATTERN, options.timestamp, re.ASCII):
        raise ConfigurationError(f"restore timestamp {options.timestamp!r} is not YYYYMMDD_HHMMSS")


def _strings(value: Any) -> list[str] | None:
    """``value`` when it is a list of strings, else None."""
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def _configuration_problem(paths: Sequence[str], secret_ids: Sequence[str]) -> str | None:
    for path in paths:
        if not _PATH.fullmatch(path):
            return f"{path!r} is not an SSM path such as /questboard/prod (and / alone cannot be one)"
    for index, path in enumerate(paths):
        for other in paths[index + 1 :]:
            if path == other or other.startswith(path + "/") or path.startswith(other + "/"):
                return f"the SSM paths {path} and {other} overlap"
    if any(not secret_id.strip() for secret_id in secret_ids):
        return "a secret id is empty"
    if len(set(secret_ids)) != len(secret_ids):
        return "a secret id is named twice"
    return None


def _targets(label: str, kind: str, recorded: Sequence[str], configured: Sequence[str]) -> tuple[str, ...]:
    """Where the set's paths (or secret ids) go: back where they came from when this target is configured
    with them, else to the configured ones by position."""
    if all(item in configured for item in recorded):
        return tuple(recorded)
    if len(recorded) == len(configured):
        return tuple(configured)
    raise ConfigurationError(
        f"{label}: the backup holds {len(recorded)} {kind} and this restore target has {len(configured)} "
        "configured: configure the same ones, or as many to restore into"
    )
