"""Specification of src.config.outputs: the one writer of user-named paths writes what the user
named (a link's target, a pipe or device written through), and replaces only a regular file,
atomically."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from src.config.errors import UserError
from src.config.outputs import check_output, open_output, output_folder, write_text


def test_a_regular_file_is_replaced_whole_keeping_its_permissions(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")
    path.chmod(0o640)
    write_text(path, "new\n")
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no staging file left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_part(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), open_output(path) as out:
        out.write("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
    assert not list(tmp_path.glob("*.partial"))


def test_a_symbolic_link_stays_a_link_and_its_target_is_written(tmp_path: Path) -> None:
    target = tmp_path / "real" / "predictions.jsonl"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "latest.jsonl"
    link.symlink_to(target)
    check_output(link, "--output")
    write_text(link, "new\n")
    assert link.is_symlink() and target.read_text() == "new\n"
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "real" / "made.jsonl")
    write_text(dangling, "made\n")
    assert dangling.is_symlink() and (tmp_path / "real" / "made.jsonl").read_text() == "made\n"


def test_a_pipe_is_written_through_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    check_output(fifo, "--output")
    write_text(fifo, "through\n")
    reader.join(timeout=10)
    assert received == ["through\n"]
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # still the pipe


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_a_device_is_written_through_not_replaced(tmp_path: Path) -> None:
    """As root, a rename over /dev/null would have replaced the system's device node."""
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.stat("/dev/null").st_rdev)  # a twin of /dev/null
    check_output(null, "--output")
    write_text(null, "gone\n")
    assert stat.S_ISCHR(null.stat().st_mode) and null.stat().st_rdev == os.stat("/dev/null").st_rdev


def test_a_dash_is_standard_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    write_text("-", "to stdout\n")
    assert capsys.readouterr().out == "to stdout\n"
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("{tmp}", r"--output .* is a directory: give a file name"),
        ("{tmp}/no/out.jsonl", r"the folder .*/no does not exist"),
    ],
    ids=["a-directory", "missing-folder"],
)
def test_an_output_that_cannot_be_written_is_refused_before_any_work(
    tmp_path: Path, where: str, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        check_output(where.format(tmp=tmp_path), "--output")
    assert not list(tmp_path.rglob("*.jsonl*"))


def test_an_output_folder_where_a_file_is_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "report").write_text("a file\n")
    with pytest.raises(UserError, match="cannot create the folder"):
        output_folder(tmp_path / "report" / "plots")
    assert (tmp_path / "report").read_text() == "a file\n"  # untouched
    assert not (tmp_path / "report" / "plots").exists()
