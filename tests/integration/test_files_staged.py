"""The files component's staged restore across processes: stage, swap in, settle, undo, leftovers."""

from __future__ import annotations

import logging
import os
import signal
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from questboard_backup.errors import ConfigurationError
from questboard_backup.sources.base import RestoreOptions
from questboard_backup.sources.files.component import FilesComponent, tree_listing
from tests.integration.test_files_component import backup, build_tree, leftovers, opener, owners

TS = "20240103_040000"
OPTIONS = RestoreOptions(TS)
#: A restore weeks before this one, whose swap went in but was never settled.
EARLIER = RestoreOptions("20231201_040000")


def killed_at_rename(count: int, step: Callable[[], object]) -> None:
    """Run ``step`` in a child process that is killed (SIGKILL) as it enters its ``count``-th rename
    without replacement: a real kill at a known point between two renames, the code itself unchanged."""
    pid = os.fork()
    if pid == 0:
        calls = 0

        def profile(frame: FrameType, event: str, arg: Any) -> None:
            nonlocal calls
            code = frame.f_code
            if (
                event == "call"
                and code.co_name == "rename_noreplace"
                and code.co_filename.endswith("handles.py")
            ):
                calls += 1
                if calls == count:
                    os.kill(os.getpid(), signal.SIGKILL)

        try:
            sys.setprofile(profile)
            step()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "the step was not killed"


def live_tree(tmp_path: Path) -> tuple[Path, Path, dict[str, Any], bytes, Any]:
    """A live tree backed up, then changed; returns its roots and the backup."""
    uploads, config = build_tree(tmp_path / "live")
    facts, stored, stats = backup(FilesComponent("files", [uploads, config]))
    (uploads / "日本語.txt").write_text("changed since the backup")
    (uploads / "added.txt").write_text("new since the backup")
    config.write_text("QUESTBOARD_MODE=changed\n")
    return uploads, config, facts, stored, stats


def state(*roots: Path) -> dict[Path, Any]:
    """Everything of each root a restore could change: listing and owners, and what sits beside it."""
    return {root: (tree_listing(root), owners(root), sorted(os.listdir(root.parent))) for root in roots}


def test_a_stage_undone_by_another_instance_leaves_the_targets_as_they_were(tmp_path: Path) -> None:
    uploads, config, facts, stored, stats = live_tree(tmp_path)
    before = state(uploads, config)

    report = FilesComponent("files", ()).stage(opener(stored, stats), facts, OPTIONS)

    assert report == {"roots": [str(uploads), str(config)], "files": 10, "dirs": 5, "symlinks": 3}
    staging = uploads.parent / f".uploads.restore-{TS}"
    assert stat.S_IMODE(staging.lstat().st_mode) == 0o700 and staging.lstat().st_uid == os.geteuid()
    assert {root: tree_listing(root) for root in (uploads, config)} == {r: s[0] for r, s in before.items()}

    lines = FilesComponent("files", [uploads, config]).undo(OPTIONS)

    assert lines == [
        f"files: staging {staging} removed",
        f"files: staging {config.parent}/.app.env.restore-{TS} removed",
    ]
    assert state(uploads, config) == before
    assert FilesComponent("files", [uploads, config]).undo(OPTIONS) == []


def test_a_swap_undone_by_another_instance_gives_back_the_original_trees_exactly(tmp_path: Path) -> None:
    uploads, config, facts, stored, stats = live_tree(tmp_path)
    before = state(uploads, config)
    staged = FilesComponent("files", ())
    staged.stage(opener(stored, stats), facts, OPTIONS)
    assert staged.swap_in(OPTIONS) == {
        "previous": [f"{uploads}.pre_restore_{TS}", f"{config}.pre_restore_{TS}"]
    }
    assert (uploads / "日本語.txt").read_text() == "冒険の記録\n"

    lines = FilesComponent("files", [uploads, config]).undo(OPTIONS)

    assert lines == [
        f"files: swap of {uploads} undone",
        f"files: staging {uploads.parent}/.uploads.restore-{TS} removed",
        f"files: swap of {config} undone",
        f"files: staging {config.parent}/.app.env.restore-{TS} removed",
    ]
    assert state(uploads, config) == before


def test_another_process_can_swap_in_and_settle_what_a_stage_left(tmp_path: Path) -> None:
    uploads, config = build_tree(tmp_path / "live")
    original = {root: tree_listing(root) for root in (uploads, config)}
    facts, stored, stats = backup(FilesComponent("files", [uploads, config]))
    config.write_text("QUESTBOARD_MODE=changed\n")
    changed = tree_listing(config)
    FilesComponent("files", ()).stage(opener(stored, stats), facts, OPTIONS)

    later = FilesComponent("files", [uploads, config])
    report = later.swap_in(OPTIONS)
    later.settle(OPTIONS)

    assert report["previous"] == [f"{uploads}.pre_restore_{TS}", f"{config}.pre_restore_{TS}"]
    assert {root: tree_listing(root) for root in (uploads, config)} == original
    assert tree_listing(Path(f"{config}.pre_restore_{TS}")) == changed
    assert not leftovers(tmp_path)
    # Settled: nothing is left to undo, and the rollback copies stay.
    assert FilesComponent("files", [uploads, config]).undo(OPTIONS) == []
    assert Path(f"{config}.pre_restore_{TS}").exists()


@pytest.mark.parametrize("finisher", ["undo", "clear_leftovers"])
@pytest.mark.parametrize("killed_at", [2, 4], ids=["first-root", "second-root"])
def test_a_swap_killed_between_two_renames_is_completed_backwards(
    tmp_path: Path, finisher: str, killed_at: int
) -> None:
    uploads, config, facts, stored, stats = live_tree(tmp_path)
    before = state(uploads, config)
    FilesComponent("files", ()).stage(opener(stored, stats), facts, OPTIONS)

    # Renames 1 and 2 swap uploads, 3 and 4 the config file: the kill lands after the target was moved
    # aside and before the staged copy took its place.
    killed_at_rename(killed_at, lambda: FilesComponent("files", [uploads, config]).swap_in(OPTIONS))
    half_done = uploads if killed_at == 2 else config
    assert not half_done.exists() and Path(f"{half_done}.pre_restore_{TS}").exists()

    later = FilesComponent("files", [uploads, config])
    if finisher == "undo":
        lines = later.undo(OPTIONS)
    else:
        lines = later.clear_leftovers(RestoreOptions("20240104_050000"))
    assert f"files: swap of {half_done} undone" in lines
    if finisher == "clear_leftovers" and killed_at == 4:
        # Uploads had gone in before the kill: a later restore settles it forwards, never puts it back.
        assert tree_listing(Path(f"{uploads}.pre_restore_{TS}")) == before[uploads][0]
        assert (uploads / "日本語.txt").read_text() == "冒険の記録\n"
        assert f"files: settled the swap of an earlier restore ({TS}) into {uploads}" in lines
        assert state(config) == {config: before[config]}
        assert not leftovers(tmp_path)
    else:
        assert state(uploads, config) == before


def test_clear_leftovers_removes_other_restores_staging_but_keeps_settled_rollback_copies(
    tmp_path: Path,
) -> None:
    uploads, config, facts, stored, stats = live_tree(tmp_path)
    modified = tree_listing(uploads)
    FilesComponent("files", ()).restore(opener(stored, stats), facts, RestoreOptions("20240101_000000"))
    after_restore = state(uploads, config)
    # A later restore staged and was then abandoned (its process died before swapping).
    FilesComponent("files", ()).stage(opener(stored, stats), facts, OPTIONS)
    abandoned = uploads.parent / f".uploads.restore-{TS}"
    assert abandoned.is_dir()

    lines = FilesComponent("files", [uploads, config]).clear_leftovers(RestoreOptions("20240105_060000"))

    assert lines == [
        f"files: staging {abandoned} removed",
        f"files: staging {config.parent}/.app.env.restore-{TS} removed",
    ]
    assert state(uploads, config) == after_restore
    assert tree_listing(Path(f"{uploads}.pre_restore_20240101_000000")) == modified
    assert not leftovers(tmp_path)


def test_clear_leftovers_leaves_the_current_restores_staging_alone(tmp_path: Path) -> None:
    uploads, config, facts, stored, stats = live_tree(tmp_path)
    component = FilesComponent("files", ())
    component.stage(opener(stored, stats), facts, OPTIONS)
    assert FilesComponent("files", [uploads, config]).clear_leftovers(OPTIONS) == []
    component.swap_in(OPTIONS)
    component.settle(OPTIONS)
    assert (uploads / "日本語.txt").read_text() == "冒険の記録\n" and not leftovers(tmp_path)


def test_a_restore_into_a_fresh_root_undone_elsewhere_leaves_no_folder_behind(tmp_path: Path) -> None:
    uploads, config, facts, stored, stats = live_tree(tmp_path)
    restored = tmp_path / "restored"
    options = RestoreOptions(TS, restored)
    staged = FilesComponent("files", ())
    staged.stage(opener(stored, stats), facts, options)
    assert staged.swap_in(options) == {"previous": []}
    assert (restored / uploads.relative_to("/") / "日本語.txt").read_text() == "冒険の記録\n"

    lines = FilesComponent("files", [uploads, config]).undo(options)

    assert f"files: swap of {restored / uploads.relative_to('/')} undone" in lines
    assert not restored.exists()


def test_clear_leftovers_settles_an_earlier_unsettled_swap_keeping_what_the_targets_took_since(
    tmp_path: Path,
) -> None:
    uploads, config, facts, stored, stats = live_tree(tmp_path)
    modified = {root: tree_listing(root) for root in (uploads, config)}
    earlier = FilesComponent("files", ())
    earlier.stage(opener(stored, stats), facts, EARLIER)
    earlier.swap_in(EARLIER)  # and its settle failed, or its process was killed: the mark stays
    (uploads / "uploaded-since.txt").write_text("written weeks after that restore")
    (uploads / "日本語.txt").write_text("edited since that restore")
    config.write_text("QUESTBOARD_MODE=edited-since\n")
    live = {root: tree_listing(root) for root in (uploads, config)}

    lines = FilesComponent("files", [uploads, config]).clear_leftovers(OPTIONS)

    assert {root: tree_listing(root) for root in (uploads, config)} == live
    assert lines == [
        f"files: settled the swap of an earlier restore ({EARLIER.timestamp}) into {uploads}",
        f"files: settled the swap of an earlier restore ({EARLIER.timestamp}) into {config}",
    ]
    previous = {root: Path(f"{root}.pre_restore_{EARLIER.timestamp}") for root in (uploads, config)}
    assert {root: tree_listing(copy) for root, copy in previous.items()} == modified
    assert not leftovers(tmp_path)
    # Settled: the earlier restore's own undo finds nothing to put back.
    assert FilesComponent("files", [uploads, config]).undo(EARLIER) == []
    assert {root: tree_listing(root) for root in (uploads, config)} == live


def test_clear_leftovers_settles_an_earlier_unsettled_swap_into_a_mount_point(
    tmp_path: Path, mounted_uploads: Path
) -> None:
    uploads, config = build_tree(tmp_path / "live")
    facts, stored, stats = backup(FilesComponent("files", [uploads, config]))
    (uploads / "日本語.txt").write_text("changed since the backup")
    modified = tree_listing(uploads)
    earlier = FilesComponent("files", ())
    earlier.stage(opener(stored, stats), facts, EARLIER)
    earlier.swap_in(EARLIER)
    (uploads / "uploaded-since.txt").write_text("written weeks after that restore")
    os.chmod(uploads, 0o750)  # the operator's own change to the mount point since

    def own(listing: dict[str, Any]) -> dict[str, Any]:
        """The mount point's own entries: neither restore's staging nor the previous copy."""
        return {name: value for name, value in listing.items() if not name.startswith((".pre_", ".uploads."))}

    live = own(tree_listing(uploads))

    lines = FilesComponent("files", [uploads, config]).clear_leftovers(OPTIONS)

    assert own(tree_listing(uploads)) == live
    assert f"files: settled the swap of an earlier restore ({EARLIER.timestamp}) into {uploads}" in lines
    assert tree_listing(uploads / f".pre_restore_{EARLIER.timestamp}") == modified
    assert not leftovers(tmp_path)


def test_clear_leftovers_looks_only_at_names_carrying_a_restore_timestamp(tmp_path: Path) -> None:
    uploads, config = live_tree(tmp_path)[:2]
    # An operator's folders named like staging, private and laid out as a stage's, without its timestamp.
    lookalikes = [
        uploads.parent / f".uploads.restore-{suffix}" for suffix in ("keep-me", "2024", "20240101_0000001")
    ]
    for folder in lookalikes:
        (folder / "tree").mkdir(mode=0o700, parents=True)
        (folder / "tree" / "keep.txt").write_text("the operator's")
        os.chmod(folder, 0o700)

    assert FilesComponent("files", [uploads, config]).clear_leftovers(OPTIONS) == []
    assert all((folder / "tree" / "keep.txt").read_text() == "the operator's" for folder in lookalikes)


@pytest.mark.parametrize("unlike", ["open-to-all", "someone-elses", "unexpected-entry", "wrong-mode"])
@pytest.mark.parametrize("finisher", ["undo", "clear_leftovers"])
def test_a_folder_under_a_staging_name_that_is_not_the_engines_is_left_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, finisher: str, unlike: str
) -> None:
    uploads, config = live_tree(tmp_path)[:2]
    timestamp = TS if finisher == "undo" else EARLIER.timestamp
    folder = uploads.parent / f".uploads.restore-{timestamp}"
    (folder / "tree").mkdir(mode=0o700, parents=True)
    (folder / "tree" / "keep.txt").write_text("not the engine's")
    os.chmod(folder, 0o700)
    if unlike == "open-to-all":
        os.chmod(folder, 0o755)
    elif unlike == "someone-elses":
        os.chown(folder, 1000, 1000)
    elif unlike == "unexpected-entry":
        (folder / "notes.txt").write_text("no stage writes this")
    else:
        os.chmod(folder, 0o500)
    before = tree_listing(folder)

    later = FilesComponent("files", [uploads, config])
    with caplog.at_level(logging.WARNING):
        lines = later.undo(OPTIONS) if finisher == "undo" else later.clear_leftovers(OPTIONS)

    assert tree_listing(folder) == before
    assert lines == [f"files: {folder} is not a private staging folder; left in place"]
    assert [record.levelno for record in caplog.records if str(folder) in record.getMessage()] == [
        logging.WARNING
    ]


@pytest.mark.parametrize("timestamp", ["keep-me", "2024-01-03", "20240103_0400001", "20240103040000"])
def test_a_restore_timestamp_not_shaped_like_the_engines_is_refused(tmp_path: Path, timestamp: str) -> None:
    uploads, config, facts, stored, stats = live_tree(tmp_path)
    before = state(uploads, config)
    component = FilesComponent("files", [uploads, config])

    for step in (component.undo, component.clear_leftovers):
        with pytest.raises(ConfigurationError, match=r"is not YYYYMMDD_HHMMSS$"):
            step(RestoreOptions(timestamp))
    with pytest.raises(ConfigurationError, match=r"is not YYYYMMDD_HHMMSS$"):
        component.stage(opener(stored, stats), facts, RestoreOptions(timestamp))
    assert state(uploads, config) == before
