"""Prompt templates (`prompt=`): the raw text, label descriptions, or few-shot examples.

A template is a Python format string with exactly one `{text}`; `{instruction}` and `{labels}`
come from the data config (data.instruction, data.label_descriptions), `{examples}` from
prompt.k training examples per label. The rendered prompt is split at the text into a prefix
and a suffix, which truncation never cuts (see src.inputs.long_text).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from src.config.errors import UserError
from src.config.schema import DataConfig, PromptConfig
from src.data import streams

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PROMPTS = ("none", "label_descriptions", "few_shot")
TEMPLATE_FIELDS = {"text", "instruction", "labels", "examples"}
LABEL_LINE_FIELDS = {"label", "description"}
EXAMPLE_FIELDS = {"text", "label"}
# Stands in for the text while the template (and chat template) render; never in real text.
_SENTINEL = "\u0000TEXT\u0000"


@dataclass(frozen=True)
class Prompt:
    """What goes before and after a text; no special tokens of our own inside a chat template."""

    prefix: str = ""
    suffix: str = ""
    special_tokens: bool = True


def fields(template: str) -> list[str]:
    """The placeholder names of a format string, in order."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise UserError(f"malformed prompt template {template!r}: {exc}") from exc


def check_plain_fields(key: str, template: str) -> None:
    """Placeholders are names only: a conversion (`{text!r}`) or format spec (`{text:>10}`)
    would run Python's formatting on the user's text (and on our stand-in for it)."""
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is not None and (spec or conversion):
            typed = (
                "{"
                + name
                + (f"!{conversion}" if conversion else "")
                + (f":{spec}" if spec else "")
                + "}"
            )
            raise UserError(
                f"{key}={template!r}: the placeholder {typed} has a "
                f"{'conversion' if conversion else 'format spec'}, but placeholders are plain "
                f"names here: write {{{name}}}"
            )


def check_prompt(cfg: PromptConfig, task: str) -> None:
    """Reject unknown templates and placeholders before anything is loaded."""
    if cfg.name not in PROMPTS:
        raise UserError(
            f"unknown prompt template prompt.name={cfg.name!r}; choose one of {PROMPTS}"
        )
    checks = (
        ("prompt.template", cfg.template, TEMPLATE_FIELDS),
        ("prompt.label_line", cfg.label_line, LABEL_LINE_FIELDS),
        ("prompt.example", cfg.example, EXAMPLE_FIELDS),
    )
    for key, template, allowed in checks:
        unknown = sorted(set(fields(template)) - allowed)
        check_plain_fields(key, template)
        if unknown:
            raise UserError(
                f"{key}={template!r} has unknown placeholders {unknown}; allowed: {sorted(allowed)}"
            )
    if fields(cfg.template).count("text") != 1:
        raise UserError(f"prompt.template={cfg.template!r} must contain {{text}} exactly once")
    if cfg.k < 0:
        raise UserError(f"prompt.k={cfg.k} must be >= 0 (few-shot examples per label)")
    if cfg.example_max_chars < 1:
        raise UserError(
            f"prompt.example_max_chars={cfg.example_max_chars} must be at least 1 (few-shot"
            " example texts are cut to it)"
        )
    if cfg.system and not cfg.chat_template:
        raise UserError(
            "prompt.system is the system message of a chat template: set"
            " prompt.chat_template=true too, or put the text into prompt.template"
        )
    if "examples" in fields(cfg.template):
        if cfg.k < 1:
            raise UserError(f"prompt.k={cfg.k}: a template with {{examples}} needs k >= 1")
        if task != "single_label":
            raise UserError(
                f"prompt.k draws examples per class: few-shot prompts need task=single_label,"
                f" not task={task}"
            )


def build_prompt(
    cfg: PromptConfig,
    data: DataConfig,
    train: pd.DataFrame,
    label_names: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
) -> Prompt:
    """Render the template around the text (and the chat template around that)."""
    used = set(fields(cfg.template))
    values: dict[str, str] = {}
    if "instruction" in used:
        if not data.instruction:
            raise UserError(
                f"prompt={cfg.name} uses {{instruction}}: set data.instruction to the task"
                " in one sentence"
            )
        values["instruction"] = data.instruction
    if "labels" in used:
        values["labels"] = label_lines(cfg.label_line, label_names, data.label_descriptions)
    if "examples" in used:
        shots = few_shot_examples(train, label_names, cfg.k, seed)
        values["examples"] = "\n".join(
            cfg.example.format(text=text[: cfg.example_max_chars], label=label_names[label])
            for text, label in zip(shots.text, shots.label, strict=True)
        )
    rendered = cfg.template.format(text=_SENTINEL, **values)
    if cfg.chat_template:
        rendered = in_chat_template(tokenizer, rendered, cfg.system)
    prefix, suffix = rendered.split(_SENTINEL)
    return Prompt(prefix=prefix, suffix=suffix, special_tokens=not cfg.chat_template)


def label_lines(line: str, label_names: Sequence[str], descriptions: dict[str, str] | None) -> str:
    """One line per label with its description, in label order."""
    descriptions = dict(descriptions or {})
    missing = [name for name in label_names if not descriptions.get(name)]
    if missing:
        raise UserError(
            f"data.label_descriptions has no description for labels {missing}; give one concise"
            f" description per label (labels: {list(label_names)})"
        )
    return "\n".join(
        line.format(label=name, description=descriptions[name]) for name in label_names
    )


def few_shot_examples(
    train: pd.DataFrame, label_names: Sequence[str], k: int, seed: int
) -> pd.DataFrame:
    """k seeded training rows per label, interleaved (one of each label, then the next ...)."""
    counts = train["label"].value_counts()
    smallest = min(range(len(label_names)), key=lambda label: counts.get(label, 0))
    if counts.get(smallest, 0) < k:
        raise UserError(
            f"prompt.k={k} examples per label, but the training split has only"
            f" {counts.get(smallest, 0)} of label {label_names[smallest]!r}; lower prompt.k"
        )
    rng = streams.rng(seed, streams.Stream.few_shot)
    picks = [
        rng.permutation(np.flatnonzero(train["label"].to_numpy() == label))[:k]
        for label in range(len(label_names))
    ]
    order = [rows[i] for i in range(k) for rows in picks]
    return train.iloc[order].reset_index(drop=True)


def in_chat_template(tokenizer: PreTrainedTokenizerBase, content: str, system: str | None) -> str:
    """`content` as the user turn of the tokenizer's chat template, ready for the answer."""
    if not tokenizer.chat_template:
        raise UserError(
            "prompt.chat_template=true, but the tokenizer has no chat template (Base models"
            " usually have none): use an Instruct model or set prompt.chat_template=false"
        )
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": content})
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert isinstance(rendered, str)
    return rendered
