"""Specification of src.predict's inputs and output: texts read as written, from a text file or a
data file's text column; the output written to what the user named."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest

from src.predict import main as predict_main
from tests.test_errors_catalogue import tiny_checkpoint

TEXTS = ['好"评\u2028第二句', "  差  ", "NA", "01"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("predict") / "ckpt")


def answers(path: Path) -> list[dict]:
    """The JSON Lines src.predict wrote (split at \\n only: texts may hold U+2028)."""
    return [json.loads(line) for line in path.read_text("utf-8").split("\n") if line]


@pytest.mark.parametrize("fmt", ["txt", "csv"])
def test_texts_with_a_bom_crlf_and_unicode_line_separators_are_classified_as_written(
    model: Path, tmp_path: Path, fmt: str
) -> None:
    given = tmp_path / f"texts.{fmt}"
    if fmt == "txt":
        body = "\r\n".join(TEXTS) + "\r\n"
    else:
        body = "id,text\r\n" + "".join(
            f'{i},"{t.replace(chr(34), 2 * chr(34))}"\r\n' for i, t in enumerate(TEXTS)
        )
    given.write_bytes(codecs.BOM_UTF8 + body.encode("utf-8"))
    out = tmp_path / "out.jsonl"
    assert predict_main(["--model", str(model), "--input", str(given), "--output", str(out)]) == 0
    assert [row["text"] for row in answers(out)] == TEXTS


def test_the_output_named_through_a_link_is_written_at_its_target(
    model: Path, tmp_path: Path
) -> None:
    """It was written beside the link and renamed over it: the link became a file."""
    given = tmp_path / "texts.txt"
    given.write_text("好\n差\n", "utf-8")
    target = tmp_path / "kept" / "predictions.jsonl"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "latest.jsonl"
    link.symlink_to(target)
    assert predict_main(["--model", str(model), "--input", str(given), "--output", str(link)]) == 0
    assert link.is_symlink() and [r["text"] for r in answers(target)] == ["好", "差"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["predictions.jsonl"]
