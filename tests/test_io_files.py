"""engine.io.files: atomic writes leave either the whole new file or the old one, and sidecars travel with it."""
from __future__ import annotations

import pytest

from engine.io.files import PendingFile, atomic_path


def test_atomic_path_replaces_on_success_and_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "sub" / "r.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".r.") and tmp.suffix == ".json"
        tmp.write_text("one")
    assert target.read_text() == "one" and (target.stat().st_mode & 0o777) == 0o644
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("stop")
    assert target.read_text() == "one" and sorted(p.name for p in target.parent.iterdir()) == ["r.json"]


def test_pending_file_moves_its_sidecar_and_drops_a_stale_one(tmp_path):
    target = tmp_path / "c.tif"
    target.write_text("old")
    (tmp_path / "c.tif.aux.xml").write_text("old classes")
    pending = PendingFile(target, sidecars=(".aux.xml",))
    pending.tmp.write_text("new")
    (tmp_path / (pending.tmp.name + ".aux.xml")).write_text("new classes")
    pending.commit()
    assert target.read_text() == "new" and (tmp_path / "c.tif.aux.xml").read_text() == "new classes"
    pending = PendingFile(target, sidecars=(".aux.xml",))
    pending.tmp.write_text("newer, no PAM")
    pending.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tif"]  # the old PAM would describe another file
    pending = PendingFile(target)
    pending.tmp.write_text("x")
    (tmp_path / (pending.tmp.name + "-wal")).write_text("journal")
    pending.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tif"] and target.read_text() == "newer, no PAM"


def test_stale_temp_files_are_those_of_the_same_output_only(tmp_path):
    from engine.io.files import remove_stale_temp_files, stale_temp_files

    ours = [".c.tif.tmp-0123abcd.tif", ".c.tif.tmp-0123abcd.tif.aux.xml", ".c.tmp-89abcdef.tif"]  # last: older name
    others = [".c.gpkg.tmp-0123abcd.gpkg", ".cc.tif.tmp-0123abcd.tif", ".c.tmp-89abcdef.gpkg", "c.tif"]
    for name in ours + others:
        (tmp_path / name).write_text("x")
    pending = PendingFile(tmp_path / "c.tif")  # a new temp of the same output is one of them (only the lock holder
    pending.tmp.write_text("x")                # may call remove_stale_temp_files)
    assert sorted(p.name for p in stale_temp_files(tmp_path / "c.tif")) == sorted(ours + [pending.tmp.name])
    remove_stale_temp_files(tmp_path / "c.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)
