"""Folders written whole: build a sibling folder, then swap it into place.

Readers (the running app, a training run) see the old folder or the new one, never half of one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def scratch_dir(final: Path) -> Path:
    """An empty-to-be sibling of ``final`` to build the new folder in (``<name>.tmp<pid>``; a leftover from
    a crashed run is removed). The caller creates it, or lets a writer such as ``save_pretrained`` do so."""
    tmp = final.with_name(f"{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def replace_dir(tmp: Path, final: Path) -> None:
    """Put the finished folder ``tmp`` at ``final``, replacing what was there.

    POSIX renames a folder atomically but cannot swap two non-empty ones: the old folder is renamed
    aside, the new one renamed into place, then the old one deleted. Only between the two renames is
    ``final`` missing (a failed second rename puts the old folder back); never is it half written.
    """
    old = final.with_name(f"{final.name}.old{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    had_old = final.exists()
    if had_old:
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        if had_old:
            os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
