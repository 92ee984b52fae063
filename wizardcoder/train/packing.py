"""Padding-free packing: several examples in one row, with no attention across them.

With ``train.packing`` the encoded examples are grouped (best-fit decreasing) into rows of
at most ``max_length`` tokens. Inside a row every example keeps its own ``position_ids``,
restarting at 0, and the collator sends no ``attention_mask``: transformers then derives a
block-diagonal causal mask from the position ids (``masking_utils.find_packed_sequence_indices``
for sdpa / eager / flex attention; flash-attention takes the varlen path from the same
position ids when the micro-batch is one flattened row). Each example's first label is -100,
so the last token of one example is never trained to predict the first token of the next.
The model therefore computes, per token, exactly what it computes for the example alone;
``tests/test_training_packing.py`` checks the logits and the loss.

Batch size with packing: ``per_device_train_batch_size`` counts packed ROWS (each up to
``max_length`` tokens), not examples, so an optimizer step sees more examples than without
packing; the metrics report ``packing_examples_per_row`` to convert.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from wizardcoder.train.data import IGNORE_INDEX, SupervisedDataset

# Batch key holding the number of real (non-pad) tokens of a packed micro-batch: packed
# batches carry no attention_mask, so the Trainer could not tell padding from EOS (often the
# same id). SFTTrainer counts it and strips it before the forward pass.
REAL_TOKENS_KEY = "real_tokens"


@dataclass
class PackStats:
    rows: int = 0
    examples: int = 0
    tokens: int = 0
    max_length: int = 0

    @property
    def density(self) -> float:
        """Real tokens / (rows x max_length): 1.0 means no padding at all."""
        return self.tokens / (self.rows * self.max_length) if self.rows else 0.0

    def as_dict(self) -> dict[str, float]:
        return {"packed_rows": self.rows,
                "packing_examples_per_row": round(self.examples / self.rows, 3)
                if self.rows else 0.0,
                "packing_density": round(self.density, 4)}


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Group indices into bins whose lengths sum to <= ``capacity``; deterministic.

    Longest first, each into the fullest bin that still has room (O(n log n) search). Bins
    keep their items in input order, so a row reads like the data file.
    """
    if any(n > capacity for n in lengths):
        raise ValueError(f"an example is longer than the row capacity {capacity}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), sorted
    for i in order:
        n = lengths[i]
        pos = bisect.bisect_left(free, (n, -1))
        if pos < len(free):
            room, b = free.pop(pos)
        else:
            room, b = capacity, len(bins)
            bins.append([])
        bins[b].append(i)
        if room - n > 0:
            bisect.insort(free, (room - n, b))
    return [sorted(b) for b in bins]


def pack_dataset(dataset: SupervisedDataset, max_length: int) -> SupervisedDataset:
    """Encoded examples -> packed rows ``{input_ids, labels, position_ids}``.

    The encode stats (truncation etc.) are kept; ``.pack_stats`` describes the rows.
    """
    examples = dataset.examples
    rows = []
    for members in best_fit_decreasing([len(e["input_ids"]) for e in examples], max_length):
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for i in members:
            e = examples[i]
            n = len(e["input_ids"])
            ids += e["input_ids"]
            labels += [IGNORE_INDEX] + list(e["labels"][1:])  # no prediction across examples
            positions += range(n)
        rows.append({"input_ids": ids, "labels": labels, "position_ids": positions})
    stats = PackStats(rows=len(rows), examples=len(examples),
                      tokens=sum(len(e["input_ids"]) for e in examples), max_length=max_length)
    return SupervisedDataset(rows, dataset.stats, pack_stats=stats)


class PackedCollator:
    """Packed rows -> a batch without attention_mask.

    ``flatten=False`` (sdpa, eager): one row per packed row, shorter rows padded at the end
    with a separate dummy sequence (pad ids, positions 0.., labels -100) that no real token
    can attend to. ``flatten=True`` (flash-attention): the whole micro-batch becomes a
    single row with no padding at all, which flash-attention's varlen kernel splits back
    into sequences; for sdpa that would instead build one quadratic mask over all rows.
    """

    def __init__(self, pad_token_id: int, flatten: bool = False):
        if pad_token_id is None:
            raise ValueError("pad_token_id is None: call ensure_pad_token(tokenizer) first")
        self.pad_token_id = pad_token_id
        self.flatten = flatten

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        keys = ("input_ids", "labels", "position_ids")
        real = sum(len(f["input_ids"]) for f in features)
        if self.flatten:
            batch = {k: [[x for f in features for x in f[k]]] for k in keys}
        else:
            longest = max(len(f["input_ids"]) for f in features)
            batch = {k: [] for k in keys}
            for f in features:
                pad = longest - len(f["input_ids"])
                batch["input_ids"].append(list(f["input_ids"]) + [self.pad_token_id] * pad)
                batch["labels"].append(list(f["labels"]) + [IGNORE_INDEX] * pad)
                batch["position_ids"].append(list(f["position_ids"]) + list(range(pad)))
        out = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
        out[REAL_TOKENS_KEY] = torch.tensor([real], dtype=torch.long)
        return out


def uses_flash_attention(model) -> bool:
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None) or ""
    return "flash" in str(impl)


# --- start-up self-check -----------------------------------------------------------------

PACKING_CHECK_TOKENS = 48  # per example: enough positions to show any leak, cheap to run


def packed_pair_difference(model, first: list[int], second: list[int], autocast=None) -> float:
    """Relative max |logit difference| between two examples packed in one row and alone.

    The row is sent as training sends it: position ids restarting at 0 for the second
    example and no attention mask (also the flattened form flash-attention's varlen path
    reads). The difference is over the scale of the logits, so 16-bit rounding stays small
    while a leak (the second example attending to the first) is of the order of 1.
    """
    import contextlib

    import torch

    device = next(model.parameters()).device
    ctx = torch.autocast(device.type, dtype=autocast) if autocast else contextlib.nullcontext()
    ids = torch.tensor([first + second], device=device)
    positions = torch.tensor([list(range(len(first))) + list(range(len(second)))],
                             device=device)
    with torch.no_grad(), ctx:
        packed = model(input_ids=ids, position_ids=positions).logits[0].float()
        alone = torch.cat([model(input_ids=torch.tensor([x], device=device)).logits[0].float()
                           for x in (first, second)])
    scale = max(alone.abs().max().item(), 1.0)
    return (packed - alone).abs().max().item() / scale


def check_packing(model, examples: list[dict], precision: str,
                  tolerance: float | None = None) -> float:
    """Refuse to pack (ConfigError) when the model lets packed examples see each other.

    Run on the actual model before the first step: whether transformers isolates packed
    sequences depends on its version (position-id detection arrived in 4.53.3 / 4.54 for
    sdpa, eager and flex attention) and on the attention implementation, so no version check
    alone can prove it. Returns the measured relative difference.
    """
    import torch

    from wizardcoder.errors import ConfigError

    pair = [list(e["input_ids"][:PACKING_CHECK_TOKENS]) for e in examples[:2]]
    if len(pair) < 2:
        return 0.0
    dtype = next(model.parameters()).dtype
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = half if half is not None and dtype == torch.float32 else None
    sixteen_bit = autocast is not None or dtype in (torch.bfloat16, torch.float16)
    if tolerance is None:
        tolerance = 5e-2 if sixteen_bit else 1e-3
    was_training = model.training
    model.eval()
    try:
        diff = packed_pair_difference(model, pair[0], pair[1], autocast)
    finally:
        model.train(was_training)
    if not diff <= tolerance:
        import transformers

        impl = getattr(model.config, "_attn_implementation", "?")
        raise ConfigError(
            f"train.packing: packed examples are not isolated on this model: a packed pair's "
            f"logits differ from the two examples run alone by {diff:.3g} (relative; "
            f"train.packing_check_tolerance {tolerance:g}) with attention {impl!r} and "
            f"transformers {transformers.__version__}; set train.packing: false or another "
            f"train.attn_implementation")
    return diff


def packing_check_callback(examples: list[dict], precision: str, tolerance: float | None):
    """TrainerCallback running ``check_packing`` once the Trainer has prepared the model
    (under ZeRO-3 its parameters are then gathered layer by layer on every rank)."""
    from transformers import TrainerCallback

    pair = examples[:2]

    class PackingCheck(TrainerCallback):
        difference: float | None = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.difference = check_packing(model, pair, precision, tolerance)

    return PackingCheck()
