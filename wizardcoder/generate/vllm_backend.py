"""vLLM backend: offline batched generation in this process (GPU machines).

vllm is imported only here, when this backend is chosen; without it the run stops with a
clear ExternalError. (Not exercised by the test suite: vllm is not installed on CPU CI.)
"""

from __future__ import annotations

from pathlib import Path

from wizardcoder.errors import ExternalError
from wizardcoder.generate.base import Backend
from wizardcoder.generate.config import GenerateConfig


def _import_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise ExternalError(
            "generate.backend 'vllm' needs the vllm package (pip install vllm on a CUDA "
            f"machine); use backend 'hf' or 'openai' otherwise ({exc})") from None
    return vllm


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, config: GenerateConfig, model_dir: str | Path):
        super().__init__(config, model_dir)
        vllm = _import_vllm()
        from wizardcoder.generate.hf import model_source

        source, extra = model_source(model_dir)
        model = str(Path(source) / extra["gguf_file"]) if "gguf_file" in extra else source
        dtype = "auto" if config.dtype == "auto" else config.dtype
        try:
            self.llm = vllm.LLM(model=model, seed=config.seed, dtype=dtype)
        except Exception as exc:  # vllm raises many types on load failures
            raise ExternalError(f"vllm could not load {model}: {type(exc).__name__}: "
                                f"{exc}") from None
        self._vllm = vllm

    def _generate(self, prompts: list[str], n: int,
                  seed: int | None) -> tuple[list[list[str]], int]:
        cfg = self.config
        params = self._vllm.SamplingParams(
            n=n, temperature=cfg.temperature, top_p=1.0 if cfg.greedy else cfg.top_p,
            top_k=cfg.top_k if cfg.top_k > 0 else -1, max_tokens=cfg.max_new_tokens,
            stop=list(cfg.stop) or None, seed=seed)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        texts = [[o.text for o in out.outputs] for out in outputs]
        return texts, sum(len(o.token_ids) for out in outputs for o in out.outputs)

    def close(self) -> None:
        self.llm = None
