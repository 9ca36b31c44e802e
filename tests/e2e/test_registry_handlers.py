"""A source registered in a test goes through the workflow's handlers (dump, seal, verify, promote,
publish; resolve, validate, stage, swap, verify) like the shipped ones: no handler names components."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.fake_source import registered_fake
from tests.lambda_runtime import FakeContext
from tests.offline import World


def call(module: Any, event: dict[str, Any]) -> dict[str, Any]:
    return dict(module.handler(event, FakeContext(module.__name__)))


def test_a_registered_source_goes_through_the_backup_and_restore_handlers(
    world: World, tmp_path: Path
) -> None:
    # Imported here, as the world fixture imports the handlers: importing lambdas sets up the
    # Powertools logging of the engine's loggers, which other tests must not inherit.
    from lambdas import (
        backup_dump,
        backup_prepare,
        backup_promote,
        backup_publish,
        backup_release,
        backup_seal,
        backup_verify,
        restore_component,
        restore_resolve,
        restore_swap,
        restore_validate,
        restore_verify,
    )

    source, target = tmp_path / "fake-source.bin", tmp_path / "fake-target.bin"
    source.write_bytes(b"workflow fake bytes" * 500)
    with registered_fake(source, target):
        state = call(backup_prepare, {"type": "full"})
        entry = call(backup_dump, {"component": "fake", **state})
        assert entry["name"] == "fake" and entry["object"] == "fake.tar.zst.enc"
        step = {**state, "components": [entry]}
        call(backup_seal, step)
        assert call(backup_verify, step)["checked"] == {"fake": len(source.read_bytes())}
        call(backup_promote, step)
        call(backup_publish, step)
        call(backup_release, step)

        resolved = call(restore_resolve, {"backup": state["backup"]["backup_id"], "only": ["fake"]})
        assert call(restore_validate, resolved)["components"] == ["fake"]
        report = call(restore_component, {**resolved, "component": "fake"})
        assert report == {
            "component": "fake",
            "bytes": len(source.read_bytes()),
            "seconds": report["seconds"],
        }
        assert not target.exists(), "staging must not touch the target"
        swapped = call(restore_swap, {**resolved, "components": ["fake"]})
        assert swapped == {"components": {"fake": {"previous": None}}}
        call(restore_verify, resolved)
    assert target.read_bytes() == source.read_bytes()
