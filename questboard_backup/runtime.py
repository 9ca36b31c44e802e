"""Where a component's dump or restore runs in the serverless deployment: a Lambda function (15 minutes
at most) or a Fargate task (docs/fargate.md). The choice is made before anything starts, from the
projected duration with a safety margin:

- a dump: the database's current size over the dump throughput of the last set that holds the
  component (its raw bytes over its seconds), or a conservative default before any set exists;
- a restore: ``restore.estimate_seconds`` of the manifest's entry (sizes and the dump's duration).

``forced`` ("lambda" or "fargate", the stack's ``componentRuntime``) overrides the projection; "auto"
lets it decide. Only components with a Fargate handler (PostgreSQL) may leave Lambda.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from questboard_backup.errors import ConfigurationError
from questboard_backup.manifest import Manifest

LAMBDA = "lambda"
FARGATE = "fargate"
MODES = ("auto", LAMBDA, FARGATE)
#: The components whose handlers a Fargate task runs (infra/fargate.py TASK_HANDLERS).
FARGATE_COMPONENTS = frozenset({"postgres"})
#: Projected durations are multiplied by this before they are compared with a budget.
SAFETY_MARGIN = 1.5
#: Before any set holds the component: a dump throughput far below the measured one (docs/fargate.md:
#: about 230 MB/s of database per vCPU with the server beside it), so a first backup errs towards Fargate.
DEFAULT_DUMP_BYTES_PER_SECOND = 20e6


@dataclass(frozen=True)
class Projection:
    component: str
    seconds: float | None
    budget_seconds: float
    runtime: str
    reason: str


def dump_throughput(history: Mapping[str, float] | None) -> float:
    """Raw bytes per second of the last dump of the component (``{"raw_bytes", "seconds"}``)."""
    if not history or float(history.get("seconds", 0)) <= 0 or float(history.get("raw_bytes", 0)) <= 0:
        return DEFAULT_DUMP_BYTES_PER_SECOND
    return float(history["raw_bytes"]) / float(history["seconds"])


def choose(component: str, seconds: float | None, budget_seconds: float, forced: str = "auto") -> Projection:
    """The runtime of ``component`` given its projected ``seconds`` (None: unknown)."""
    if forced not in MODES:
        raise ConfigurationError(f"component runtime must be one of {', '.join(MODES)}, not {forced!r}")
    if component not in FARGATE_COMPONENTS:
        return Projection(component, seconds, budget_seconds, LAMBDA, "only Lambda runs this component")
    if forced != "auto":
        return Projection(component, seconds, budget_seconds, forced, f"forced by the stack ({forced})")
    if seconds is None:
        return Projection(component, None, budget_seconds, LAMBDA, "no projection: Lambda")
    projected = seconds * SAFETY_MARGIN
    if projected > budget_seconds:
        reason = f"projected {projected:.0f} s (with margin) exceeds Lambda's {budget_seconds:.0f} s"
        return Projection(component, seconds, budget_seconds, FARGATE, reason)
    return Projection(component, seconds, budget_seconds, LAMBDA, f"projected {projected:.0f} s fits")


def last_dump(manifest: Manifest | None, component: str) -> dict[str, float] | None:
    """The raw bytes and seconds of ``component``'s dump in ``manifest`` (the newest set's, read, not
    authenticated: a forged one could only move a dump to Fargate or back, and the dump itself is
    checked as always)."""
    for found in manifest.components if manifest is not None else ():
        if found.name == component and found.seconds > 0:
            return {"raw_bytes": float(found.total_raw_bytes), "seconds": float(found.seconds)}
    return None


def project_dump(size_bytes: int | None, history: Mapping[str, float] | None) -> float | None:
    """Seconds a dump of ``size_bytes`` may take at the last dump's throughput (None: size unknown)."""
    if size_bytes is None:
        return None
    return size_bytes / dump_throughput(history)
