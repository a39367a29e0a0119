from __future__ import annotations

import os

import pytest

from evit.files import _umask, atomic_path, atomic_write_text, check_writable


def test_atomic_writes_get_unique_temp_names_and_the_usual_mode(tmp_path):
    target = tmp_path / "pareto.png"
    with atomic_path(target) as a, atomic_path(target) as b:  # two workers, one output
        assert a != b and a.parent == b.parent == tmp_path
        a.write_text("a")
        b.write_text("b")
    assert target.read_text() in ("a", "b")
    atomic_write_text(tmp_path / "report.md", "x")
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert not list(tmp_path.glob(".*.tmp"))


def test_check_writable_names_what_is_wrong(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "out.onnx")
    with pytest.raises(ValueError, match="is a folder"):
        check_writable(tmp_path)
    check_writable(tmp_path / "new" / "out.onnx")  # creatable: fine
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        with pytest.raises(ValueError, match="cannot write"):
            check_writable(ro / "out.onnx")
