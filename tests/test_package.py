"""The package surface: what ``dir(tnmars)`` lists and how tnmars logs."""
from __future__ import annotations

import logging
import subprocess
import sys

import tnmars


def test_dir_lists_the_lazy_names():
    names = dir(tnmars)
    for name in tnmars.__all__:
        assert name in names
    assert {"fit", "save", "load", "FitResult"} <= set(names)


def test_logging_is_silent_by_default_and_available_on_request(tmp_path, caplog):
    code = ("import logging, tnmars, tnmars.io; "
            "logging.getLogger('tnmars.io').warning('should not be printed'); "
            "tnmars.save(tnmars.Network.cp((3, 4), 2), r'%s')" % (tmp_path / "n.npz"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr  # a NullHandler: no "last resort" output
    with caplog.at_level(logging.INFO, logger="tnmars"):
        tnmars.load(tmp_path / "n.npz")
    assert any(r.name == "tnmars.io" and "loaded network" in r.getMessage() for r in caplog.records)
