"""Packing puts several examples in one row; the model must not see across them.

The proof: on a tiny random Llama, the logits and the per-token loss of examples packed
together equal those of each example run alone (sdpa and eager attention, padded rows and
one flattened row). A control shows that the same rows WITHOUT per-example position ids
do differ, so the comparison is able to fail.
"""

from __future__ import annotations

import random

import pytest

from wizardcoder.train.data import IGNORE_INDEX, SupervisedDataset
from wizardcoder.train.packing import (
    REAL_TOKENS_KEY,
    PackedCollator,
    best_fit_decreasing,
    pack_dataset,
)

PAD = 0


def make_examples(lengths: list[int], seed: int = 0, vocab: int = 97) -> SupervisedDataset:
    """Examples with a prompt (labels -100) and a response (labels = ids)."""
    rng = random.Random(seed)
    examples = []
    for n in lengths:
        ids = [rng.randrange(1, vocab) for _ in range(n)]
        prompt = max(1, n // 3)
        examples.append({"input_ids": ids, "attention_mask": [1] * n,
                         "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return SupervisedDataset(examples)


# --- packing and collation ---------------------------------------------------------------

def test_best_fit_decreasing_fills_rows_and_keeps_every_example_once():
    rng = random.Random(1)
    lengths = [rng.randint(5, 100) for _ in range(500)]
    bins = best_fit_decreasing(lengths, 128)
    assert sorted(i for b in bins for i in b) == list(range(500))
    assert all(sum(lengths[i] for i in b) <= 128 for b in bins)
    assert all(b == sorted(b) for b in bins)
    lower_bound = -(-sum(lengths) // 128)
    assert len(bins) <= lower_bound * 1.05 + 1  # near-optimal density
    assert best_fit_decreasing(lengths, 128) == bins  # deterministic
    with pytest.raises(ValueError, match="longer than the row capacity"):
        best_fit_decreasing([10, 200], 128)


def test_pack_dataset_masks_each_example_start_and_restarts_positions():
    ds = make_examples([6, 5, 7, 6])
    packed = pack_dataset(ds, max_length=12)
    assert packed.pack_stats.rows == len(packed) == 2
    assert packed.pack_stats.as_dict() == {"packed_rows": 2, "packing_examples_per_row": 2.0,
                                           "packing_density": round(24 / 24, 4)}
    by_first = {tuple(e["input_ids"]): e for e in ds.examples}
    seen = 0
    for row in packed.examples:
        assert len(row["input_ids"]) <= 12
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
        bounds = starts + [len(row["input_ids"])]
        for a, b in zip(bounds, bounds[1:], strict=False):
            assert row["position_ids"][a:b] == list(range(b - a))
            original = by_first[tuple(row["input_ids"][a:b])]
            assert row["labels"][a] == IGNORE_INDEX
            assert row["labels"][a + 1:b] == original["labels"][1:]
            seen += 1
    assert seen == 4


def test_packed_collator_pads_with_an_isolated_segment_and_counts_real_tokens():
    rows = [{"input_ids": [5, 6, 7, 8], "labels": [-100, 6, -100, 8],
             "position_ids": [0, 1, 0, 1]},
            {"input_ids": [9, 10], "labels": [-100, 10], "position_ids": [0, 1]}]
    batch = PackedCollator(PAD)(rows)
    assert "attention_mask" not in batch
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, PAD, PAD]]
    assert batch["labels"].tolist() == [[-100, 6, -100, 8], [-100, 10, -100, -100]]
    assert batch["position_ids"].tolist() == [[0, 1, 0, 1], [0, 1, 0, 1]]
    assert batch[REAL_TOKENS_KEY].tolist() == [6]
    flat = PackedCollator(PAD, flatten=True)(rows)
    assert flat["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10]]
    assert flat["position_ids"].tolist() == [[0, 1, 0, 1, 0, 1]]
    assert flat[REAL_TOKENS_KEY].tolist() == [6]


# --- no cross-contamination ----------------------------------------------------------------

def tiny_llama(attn: str, use_cache: bool = False):
    """Configured as load_base_model leaves a model for training (KV cache off)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, pad_token_id=PAD, use_cache=use_cache,
                         attn_implementation=attn)
    return LlamaForCausalLM(config).train()  # dropout is 0: train mode is deterministic


def separate_outputs(model, examples):
    """Per example alone: (logits [n, V], per-token losses of its supervised targets)."""
    import torch
    import torch.nn.functional as F

    out = []
    with torch.no_grad():
        for e in examples:
            ids = torch.tensor([e["input_ids"]])
            logits = model(input_ids=ids).logits[0]
            targets = torch.tensor(e["labels"][1:])
            losses = F.cross_entropy(logits[:-1], targets, ignore_index=IGNORE_INDEX,
                                     reduction="none")[targets != IGNORE_INDEX]
            out.append((logits, losses))
    return out


def packed_segments(batch):
    """(row, start, end) of every real example in a collated packed batch."""
    segments = []
    for r, positions in enumerate(batch["position_ids"].tolist()):
        starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
        for a, b in zip(starts, starts[1:], strict=False):
            segments.append((r, a, b))
    return segments


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("flatten", [False, True])
def test_packed_examples_compute_exactly_what_they_compute_alone(attn, flatten):
    import torch
    import torch.nn.functional as F

    model = tiny_llama(attn)
    ds = make_examples([7, 12, 5, 16, 9, 3, 11], seed=3)
    packed = pack_dataset(ds, max_length=24)
    assert packed.pack_stats.rows < len(ds)  # several examples do share rows
    batch = PackedCollator(PAD, flatten=flatten)(packed.examples)
    if not flatten:
        assert (batch["input_ids"] == PAD).any()  # the padding path is exercised too
    alone = {tuple(e["input_ids"]): out
             for e, out in zip(ds.examples, separate_outputs(model, ds.examples), strict=True)}

    inputs = {k: v for k, v in batch.items() if k != REAL_TOKENS_KEY}
    with torch.no_grad():
        out = model(**inputs)
    matched, per_token = 0, []
    ids = batch["input_ids"]
    for r, a, b in packed_segments(batch):
        key = tuple(ids[r, a:b].tolist())
        if key not in alone:  # the pad segment
            assert set(key) == {PAD} and not flatten
            continue
        logits_alone, losses_alone = alone[key]
        torch.testing.assert_close(out.logits[r, a:b], logits_alone, atol=2e-5, rtol=1e-4)
        targets = batch["labels"][r, a + 1:b]
        losses = F.cross_entropy(out.logits[r, a:b - 1], targets, ignore_index=IGNORE_INDEX,
                                 reduction="none")[targets != IGNORE_INDEX]
        torch.testing.assert_close(losses, losses_alone, atol=2e-5, rtol=1e-4)
        per_token.append(losses_alone)
        matched += 1
    assert matched == len(ds)
    # The model's own (shifted) loss is the mean over exactly the separate runs' targets:
    # no target crosses an example boundary or lands in padding.
    expected = torch.cat(per_token).mean()
    torch.testing.assert_close(out.loss, expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("leak", ["no_position_ids", "kv_cache_on"])
def test_controls_where_the_examples_do_leak(leak):
    """Controls: the comparison above can fail.

    Without per-example position ids the row is one causal sequence; with the model's KV
    cache on, transformers skips packed-sequence detection (why load_base_model turns the
    cache off for training).
    """
    import torch

    model = tiny_llama("sdpa", use_cache=leak == "kv_cache_on")
    ds = make_examples([7, 12, 5], seed=4)
    batch = PackedCollator(PAD)(pack_dataset(ds, max_length=24).examples[:1])
    segments = packed_segments(batch)
    assert len(segments) >= 2
    _, a, b = segments[1]
    ids = batch["input_ids"]
    packed_kwargs = {"attention_mask": torch.ones_like(ids)} if leak == "no_position_ids" \
        else {"position_ids": batch["position_ids"]}
    with torch.no_grad():
        leaky = model(input_ids=ids, **packed_kwargs).logits[0, a:b]
        alone = model(input_ids=ids[:, a:b]).logits[0]
    assert not torch.allclose(leaky, alone, atol=1e-3)
