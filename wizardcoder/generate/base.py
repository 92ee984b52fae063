"""The backend interface: prompts in, ``n`` raw completions per prompt out.

One module per backend (``hf``, ``vllm_backend``, ``openai_compat``), imported only when
chosen, so torch / vllm / openai are loaded by the runs that use them and nothing else.
"""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from wizardcoder.errors import ConfigError
from wizardcoder.generate.config import GenerateConfig

BACKEND_MODULES = {
    "hf": ("wizardcoder.generate.hf", "HFBackend"),
    "vllm": ("wizardcoder.generate.vllm_backend", "VLLMBackend"),
    "openai": ("wizardcoder.generate.openai_compat", "OpenAIBackend"),
}


@dataclass
class BackendStats:
    """Counters a backend keeps; the runner reports throughput from them."""

    calls: int = 0  # generate() calls
    prompts: int = 0
    completions: int = 0
    new_tokens: int = 0  # generated tokens kept (up to the stop string / EOS)
    seconds: float = 0.0  # wall time inside generate()

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        out["tokens_per_s"] = round(self.new_tokens / self.seconds, 2) if self.seconds else 0.0
        return out


class Backend(ABC):
    """Generates raw completions. Subclasses set ``name`` and implement :meth:`generate`."""

    name = "abstract"

    def __init__(self, config: GenerateConfig, model_dir: str | Path):
        self.config = config
        self.model_dir = str(model_dir)
        self.stats = BackendStats()

    def generate(self, prompts: list[str], n: int, *, seed: int | None = None) -> list[list[str]]:
        """``n`` completions (the text after the prompt, stop strings cut off) per prompt,
        in prompt order. ``seed`` makes sampling reproducible where the backend allows it."""
        start = time.perf_counter()
        raw, new_tokens = self._generate(prompts, n, seed)
        results = [[self.finish(text) for text in texts] for texts in raw]
        self.stats.calls += 1
        self.stats.prompts += len(prompts)
        self.stats.completions += len(prompts) * n
        self.stats.new_tokens += new_tokens
        self.stats.seconds += time.perf_counter() - start
        return results

    @abstractmethod
    def _generate(self, prompts: list[str], n: int,
                  seed: int | None) -> tuple[list[list[str]], int]:
        """(``n`` raw completions per prompt in prompt order, generated tokens kept).

        A backend stops decoding where it can; :meth:`finish` then cuts every text the
        same way, since servers and samplers cannot all stop at each stop rule."""

    def finish(self, text: str) -> str:
        """``text`` cut at the first stop string and, if configured, after its first closed
        fenced code block."""
        text = truncate_at_stop(text, self.config.stop)
        return cut_after_code_block(text) if self.config.stop_after_code_block else text

    def close(self) -> None:
        """Release models, pools or servers; the default holds nothing."""
        return None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def truncate_at_stop(text: str, stop: list[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if 0 <= i < cut:
            cut = i
    return text[:cut]


FENCE = "```"


def cut_after_code_block(text: str) -> str:
    """``text`` up to the end of its first closed fenced code block (unchanged if none)."""
    start = text.find(FENCE)
    if start < 0:
        return text
    close = text.find(FENCE, start + len(FENCE))
    return text if close < 0 else text[: close + len(FENCE)]


def make_backend(config: GenerateConfig, model_dir: str | Path) -> Backend:
    """The backend named by ``config.backend``, its module imported lazily."""
    try:
        module_name, class_name = BACKEND_MODULES[config.backend]
    except KeyError:
        raise ConfigError(f"generate.backend: {config.backend!r} is not one of "
                          f"{list(BACKEND_MODULES)}") from None
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(config, model_dir)
