import os

import pytest

from assistants.fsutil import replace_dir, scratch_dir


def folder(path, **files):
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_replace_dir_swaps_the_whole_folder_and_leaves_nothing_beside_it(tmp_path):
    root = tmp_path / "adapters"  # a folder of its own: tmp_path also holds the test's data home
    final = folder(root / "adapter", **{"weights": "old", "stale": "x"})
    tmp = folder(scratch_dir(final), weights="new")
    replace_dir(tmp, final)
    assert sorted(p.name for p in final.iterdir()) == ["weights"] and (final / "weights").read_text() == "new"
    assert [p.name for p in root.iterdir()] == ["adapter"]


def test_replace_dir_creates_the_folder_the_first_time(tmp_path):
    final = tmp_path / "sft" / "legal"
    final.parent.mkdir()
    replace_dir(folder(scratch_dir(final), train="rows"), final)
    assert (final / "train").read_text() == "rows"


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    final = folder(tmp_path / "adapter", weights="old")
    tmp = folder(scratch_dir(final), weights="new")
    real_rename = os.rename

    def rename(src, dst):
        if src == tmp:
            raise OSError("disk full")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="disk full"):
        replace_dir(tmp, final)
    assert (final / "weights").read_text() == "old"


def test_scratch_dir_removes_a_crashed_run_leftover(tmp_path):
    final = tmp_path / "cache"
    leftover = folder(scratch_dir(final), half="written")
    assert scratch_dir(final) == leftover and not leftover.exists()
