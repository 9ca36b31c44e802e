"""A restore that cannot finish in the time it has is refused before anything is done (issue 10,
point 5): the estimate grows with the manifest's sizes and the dump's own duration."""

from __future__ import annotations

import pytest

from questboard_backup.errors import DeadlineExceededError
from questboard_backup.manifest import ComponentEntry, PartEntry
from questboard_backup.restore import (
    RESTORE_BYTES_PER_SECOND,
    RESTORE_FIXED_SECONDS,
    check_fits,
    estimate_seconds,
)

GIB = 1024**3


def entry(raw_bytes: int, seconds: float = 1.0, parts: tuple[int, ...] = ()) -> ComponentEntry:
    return ComponentEntry(
        name="postgres",
        object="postgres.dump.zst.enc",
        raw_bytes=raw_bytes,
        stored_bytes=raw_bytes // 4,
        sha256="0" * 64,
        seconds=seconds,
        facts={},
        parts=tuple(
            PartEntry(f"postgres.part{n}.dump.zst.enc", size, size // 4, "0" * 64)
            for n, size in enumerate(parts, 1)
        ),
    )


def test_the_estimate_counts_every_part_and_the_fixed_cost() -> None:
    assert estimate_seconds(entry(0)) == RESTORE_FIXED_SECONDS + 3.0
    one = estimate_seconds(entry(GIB))
    assert one == pytest.approx(RESTORE_FIXED_SECONDS + GIB / RESTORE_BYTES_PER_SECOND)
    assert estimate_seconds(entry(GIB, parts=(GIB, GIB))) == pytest.approx(
        RESTORE_FIXED_SECONDS + 3 * GIB / RESTORE_BYTES_PER_SECOND
    )


def test_a_slow_dump_means_a_slow_restore_whatever_the_size() -> None:
    assert estimate_seconds(entry(1024, seconds=400.0)) == RESTORE_FIXED_SECONDS + 1200.0


def test_a_restore_that_does_not_fit_is_refused_naming_the_component_and_the_numbers() -> None:
    small, large = entry(GIB), entry(100 * GIB)
    check_fits([small], 900, "one staging invocation")
    with pytest.raises(DeadlineExceededError) as refused:
        check_fits([small, large], 900, "one staging invocation")
    message = str(refused.value)
    assert "restore of postgres refused" in message and "one staging invocation (900 s)" in message
    assert f"({100 * GIB} bytes)" in message and "with the CLI on a host" in message
