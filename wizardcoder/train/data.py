"""Instruction rows -> token ids and labels for supervised fine-tuning.

The prompt comes from :func:`wizardcoder.prompt_template.build_prompt`, the very function
generation uses, so the model is evaluated on the exact text it was trained on. Prompt and
response are tokenized separately and concatenated: the boundary between them is then exact
(no guessing where BPE merged across it), and the loss is taken on response tokens only.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wizardcoder.errors import DataError
from wizardcoder.jsonl import iter_jsonl
from wizardcoder.prompt_template import build_prompt, build_target

IGNORE_INDEX = -100  # label value the causal-LM loss skips
DEFAULT_PAD_TOKEN = "<pad>"


@dataclass
class EncodeStats:
    """What encoding did to the data; logged and written into the metrics file."""

    examples: int = 0
    tokens: int = 0
    response_tokens: int = 0
    truncated_examples: int = 0
    dropped_examples: int = 0  # prompt alone filled max_length: nothing left to learn from
    max_example_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class SupervisedDataset:
    """A list of encoded examples; a map-style dataset the HF Trainer accepts as is."""

    examples: list[dict[str, list[int]]]
    stats: EncodeStats = field(default_factory=EncodeStats)
    pack_stats: Any = None  # packing.PackStats when the examples are packed rows

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.examples[index]


def ensure_pad_token(tokenizer, model=None) -> str:
    """Give tokenizers without a pad token one; returns what was done (for the log).

    StarCoder-style tokenizers have none. Reusing EOS is safe here because padding is
    recognised by the attention mask and the -100 labels the collator writes, never by the
    token id, so the real EOS closing each response still carries a label. Only without an
    EOS a new token is added (and the model's embeddings resized).
    """
    if tokenizer.pad_token is not None:
        return "kept"
    if tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
        action = "eos"
    else:
        tokenizer.add_special_tokens({"pad_token": DEFAULT_PAD_TOKEN})
        if model is not None:
            model.resize_token_embeddings(len(tokenizer))
        action = "added"
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return action


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def encode_example(tokenizer, instruction: str, input_text: str, output: str,
                   max_length: int) -> tuple[dict[str, list[int]], bool]:
    """One row -> ({input_ids, attention_mask, labels}, truncated).

    The prompt keeps the tokenizer's special prefix (BOS where it adds one); the target is
    ``build_target(output) + eos`` tokenized without specials. Truncation cuts from the end,
    so an overlong example keeps its prompt and loses the tail of its response (and its EOS).
    """
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer has no eos_token: responses could never end")
    prompt_ids = _ids(tokenizer, build_prompt(instruction, input_text), special=True)
    target_ids = _ids(tokenizer, build_target(output) + tokenizer.eos_token, special=False)
    input_ids = prompt_ids + target_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + target_ids
    truncated = len(input_ids) > max_length
    if truncated:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids),
            "labels": labels}, truncated


def _text_field(path, lineno: int, row: dict, name: str, required: bool) -> str:
    value = row.get(name, "")
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise DataError(path, lineno, name, f"expected a string, got {type(value).__name__}")
    if required and not value.strip():
        raise DataError(path, lineno, name, "must be a non-empty string")
    return value


def encode_rows(tokenizer, rows, max_length: int, path: str | Path = "<rows>",
                ) -> SupervisedDataset:
    """Encode ``(lineno, row)`` pairs; malformed rows raise DataError naming file and line."""
    stats = EncodeStats()
    examples = []
    for lineno, row in rows:
        instruction = _text_field(path, lineno, row, "instruction", required=True)
        input_text = _text_field(path, lineno, row, "input", required=False)
        output = _text_field(path, lineno, row, "output", required=True)
        example, truncated = encode_example(tokenizer, instruction, input_text, output,
                                            max_length)
        supervised = sum(1 for x in example["labels"] if x != IGNORE_INDEX)
        if truncated:
            stats.truncated_examples += 1
        if supervised == 0:
            stats.dropped_examples += 1
            continue
        stats.examples += 1
        stats.tokens += len(example["input_ids"])
        stats.response_tokens += supervised
        stats.max_example_tokens = max(stats.max_example_tokens, len(example["input_ids"]))
        examples.append(example)
    return SupervisedDataset(examples, stats)


def load_rows(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, row) pairs of a JSONL file, kept for error messages."""
    rows = list(iter_jsonl(path))
    if not rows:
        raise DataError(path, None, None, "no training rows")
    return rows


def split_rows(rows: list, eval_fraction: float, seed: int,
               path: str | Path = "<rows>") -> tuple[list, list]:
    """A seeded train/eval split; at least one eval row when a fraction is asked for."""
    if eval_fraction <= 0:
        return list(rows), []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(rows) * eval_fraction))
    if n_eval >= len(rows):
        raise DataError(path, None, None,
                        f"eval_fraction {eval_fraction} leaves no training rows "
                        f"out of {len(rows)}")
    held = set(order[:n_eval])
    return ([r for i, r in enumerate(rows) if i not in held],
            [r for i, r in enumerate(rows) if i in held])


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class SupervisedCollator:
    """Pads a batch to its longest example (dynamic padding).

    Pad positions get attention_mask 0 and label -100, so the pad id itself never matters
    (it may equal EOS). ``pad_to_multiple_of`` helps tensor cores on GPUs.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None,
                 padding_side: str = "right"):
        if pad_token_id is None:
            raise ValueError("pad_token_id is None: call ensure_pad_token(tokenizer) first")
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padding_side = padding_side

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        batch: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            n = len(f["input_ids"])
            pad = longest - n
            rows = {"input_ids": (list(f["input_ids"]), self.pad_token_id),
                    "attention_mask": (list(f.get("attention_mask") or [1] * n), 0),
                    "labels": (list(f["labels"]), IGNORE_INDEX)}
            for key, (values, fill) in rows.items():
                padded = ([fill] * pad + values if self.padding_side == "left"
                          else values + [fill] * pad)
                batch[key].append(padded)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
