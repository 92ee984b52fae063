"""transformers backend: batched ``generate`` in this process.

Prompts are tokenized with the tokenizer's special prefix (as training tokenizes them),
sorted by length and run ``batch_size`` prompts per forward pass, left-padded, with the KV
cache; sampling expands each prompt to ``n`` rows with ``num_return_sequences``. A row stops
at EOS or when its text shows one of the stop strings (:class:`StopOnStrings`); the text is
then cut at the stop string. Decoding is fully set by the ``generate`` params: the model
directory's own generation_config.json (sampling defaults, penalties) is not applied.

``model_dir`` is a saved model directory (safetensors + tokenizer), a ``.gguf`` file, or
``embedded`` for the bundled SmolLM2 GGUF (transformers dequantizes it on load).
"""

from __future__ import annotations

import logging
from pathlib import Path

from wizardcoder.embedded import EMBEDDED_NAME, embedded_gguf_path
from wizardcoder.errors import ExternalError
from wizardcoder.generate.base import FENCE, Backend
from wizardcoder.generate.config import GenerateConfig

log = logging.getLogger(__name__)

try:
    import torch
    from transformers import StoppingCriteria
except ImportError as _exc:  # pragma: no cover - torch is a core dependency
    raise ExternalError(f"the hf backend needs torch and transformers: {_exc}") from None


class StopOnStrings(StoppingCriteria):
    """Marks a row done once its generated text contains a stop string.

    Only the generated part is looked at (the prompt may well contain a stop string), and
    only its last few tokens, so a step costs the same however long the row has grown.
    """

    def __init__(self, tokenizer, stop: list[str], prompt_len: int):
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.prompt_len = prompt_len
        # A token decodes to >= 1 character except for partial UTF-8 bytes: the margin
        # covers those.
        self.window = max(len(s) for s in self.stop) + 8

    def __call__(self, input_ids, scores, **kwargs):
        tails = input_ids[:, self.prompt_len:][:, -self.window:].tolist()
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        done = [any(s in t for s in self.stop) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class StopAfterCodeBlock(StoppingCriteria):
    """Marks a row done once its generated text holds a closed fenced code block."""

    def __init__(self, tokenizer, prompt_len: int):
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len

    def __call__(self, input_ids, scores, **kwargs):
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:].tolist(),
                                            skip_special_tokens=True)
        done = [t.count(FENCE) >= 2 for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def resolve_device_dtype(device: str, dtype: str) -> tuple[str, torch.dtype]:
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise ExternalError("generate.device is 'cuda' but torch sees no CUDA device")
    device = ("cuda" if cuda else "cpu") if device == "auto" else device
    if dtype == "auto":
        if device == "cuda":
            return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return device, torch.float32
    return device, getattr(torch, dtype)


def model_source(model_dir: str | Path) -> tuple[str, dict]:
    """(path for from_pretrained, extra kwargs) for a directory, a .gguf file or 'embedded'."""
    if str(model_dir) == EMBEDDED_NAME:
        gguf = embedded_gguf_path()
        return str(gguf.parent), {"gguf_file": gguf.name}
    path = Path(model_dir)
    if path.is_file() and path.suffix == ".gguf":
        return str(path.resolve().parent), {"gguf_file": path.name}
    if path.is_dir():
        return str(path), {}
    raise ExternalError(f"model {model_dir}: not a model directory, a .gguf file or "
                        f"{EMBEDDED_NAME!r}")


def load_model(model_dir: str | Path, device: str = "auto", dtype: str = "auto"):
    """(model, tokenizer) ready for batched left-padded generation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    source, extra = model_source(model_dir)
    device, torch_dtype = resolve_device_dtype(device, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **extra)
    except (OSError, ValueError, ImportError) as exc:
        raise ExternalError(f"could not load model {model_dir}: {exc}") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ExternalError(f"model {model_dir}: the tokenizer has neither a pad nor an "
                                f"EOS token, so batches cannot be padded")
        tokenizer.pad_token = tokenizer.eos_token
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = model.config.eos_token_id
    eos_ids = sorted({*(eos if isinstance(eos, list) else [eos] if eos is not None else []),
                      *([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])})
    model.generation_config = GenerationConfig(
        eos_token_id=eos_ids or None, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id)
    model.to(device)
    model.eval()
    return model, tokenizer


class HFBackend(Backend):
    name = "hf"

    def __init__(self, config: GenerateConfig, model_dir: str | Path, model=None, tokenizer=None):
        super().__init__(config, model_dir)
        if config.threads:
            torch.set_num_threads(config.threads)
        if model is None or tokenizer is None:
            model, tokenizer = load_model(model_dir, config.device, config.dtype)
        self.model, self.tokenizer = model, tokenizer
        eos = model.generation_config.eos_token_id
        self.end_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.end_ids.add(tokenizer.pad_token_id)

    def _decoding_kwargs(self, n: int) -> dict:
        cfg = self.config
        kwargs = dict(max_new_tokens=cfg.max_new_tokens, num_return_sequences=n, use_cache=True,
                      pad_token_id=self.tokenizer.pad_token_id)
        if cfg.greedy:
            kwargs.update(do_sample=False)
        else:
            kwargs.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p,
                          top_k=cfg.top_k)
        return kwargs

    def _generate(self, prompts: list[str], n: int,
                  seed: int | None) -> tuple[list[list[str]], int]:
        if n > 1 and self.config.greedy:
            raise ValueError("greedy decoding yields one distinct completion; use n=1")
        if seed is not None:
            torch.manual_seed(seed)
        encoded = [self.tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))  # longest first
        results: list[list[str]] = [[] for _ in prompts]
        new_tokens = 0
        for pos in range(0, len(order), self.config.batch_size):
            idx = order[pos: pos + self.config.batch_size]
            texts, tokens = self._generate_batch([encoded[i] for i in idx], n)
            new_tokens += tokens
            for k, i in enumerate(idx):
                results[i] = texts[k * n: (k + 1) * n]
        return results, new_tokens

    def _generate_batch(self, ids: list[list[int]], n: int) -> tuple[list[str], int]:
        """The decoded rows (``n`` per prompt, up to EOS) and the tokens they took."""
        from transformers import StoppingCriteriaList

        prompt_len = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id
        batch = {  # left padding: every prompt ends where generation starts
            "input_ids": torch.tensor([[pad] * (prompt_len - len(x)) + x for x in ids]),
            "attention_mask": torch.tensor([[0] * (prompt_len - len(x)) + [1] * len(x)
                                            for x in ids]),
        }
        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        criteria = StoppingCriteriaList()
        if self.config.stop:
            criteria.append(StopOnStrings(self.tokenizer, self.config.stop, prompt_len))
        if self.config.stop_after_code_block:
            criteria.append(StopAfterCodeBlock(self.tokenizer, prompt_len))
        with torch.inference_mode():
            out = self.model.generate(**batch, stopping_criteria=criteria,
                                      **self._decoding_kwargs(n))
        texts, tokens = [], 0
        for row in out[:, prompt_len:].tolist():
            end = next((j for j, t in enumerate(row) if t in self.end_ids), len(row))
            tokens += min(end + 1, len(row))  # the EOS was generated too
            texts.append(self.tokenizer.decode(row[:end], skip_special_tokens=True))
        return texts, tokens

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
