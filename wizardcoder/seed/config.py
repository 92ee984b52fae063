"""params.yaml section `seed`: where the seed instructions come from."""

from __future__ import annotations

from dataclasses import dataclass

from wizardcoder.config import option, require

SOURCES = ("bundled", "file", "hf")
BUNDLED_RESOURCE = "seed_tasks.jsonl"
BUNDLED_PATH = "wizardcoder/resources/seed_tasks.jsonl"  # the same file, from the repo root


@dataclass
class SeedConfig:
    """params.yaml section `seed`."""

    source: str = option(
        "bundled", choices=SOURCES,
        help="Where seeds come from: the bundled set, a local file or an HF dataset.")
    path: str | None = option(
        BUNDLED_PATH, help="JSON (list of objects) or JSONL file, read when source=file. Always "
                           "a DVC dep of the seed stage (dvc.yaml: ${seed.path}), so it must "
                           "name an existing file; the default is the bundled set's.")
    hf_dataset: str | None = option(
        None, help="Hugging Face dataset name, e.g. sahil2801/CodeAlpaca-20k, for source=hf.")
    hf_split: str = option("train", help="Split of the Hugging Face dataset.")
    hf_revision: str | None = option(None, help="Dataset revision (commit) to pin, for source=hf.")
    limit: int = option(0, help="Keep at most this many rows after shuffling (0 = all).")
    shuffle_seed: int | None = option(
        0, help="Seed of the shuffle applied before `limit`; null keeps the file order.")

    def __post_init__(self):
        require(self.limit >= 0, "seed", "limit", "an integer >= 0 (0 = all rows)")
        if self.source == "file":
            require(bool(self.path) and self.path != BUNDLED_PATH, "seed", "path",
                    "a JSON/JSONL file path when source is 'file' (the default names the "
                    "bundled set: use source 'bundled' for that)")
        if self.source == "hf":
            require(bool(self.hf_dataset), "seed", "hf_dataset",
                    "a dataset name (e.g. sahil2801/CodeAlpaca-20k) when source is 'hf'")
