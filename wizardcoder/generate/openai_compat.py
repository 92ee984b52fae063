"""OpenAI-compatible backend: /v1/completions or /v1/chat/completions at ``base_url``.

Works against llama.cpp's server, vLLM, ``transformers serve`` and OpenAI itself. The sync
client runs in a small thread pool (``batch_size`` requests in flight). The key is read from
the environment variable named by ``api_key_env`` at run time and never stored; local
servers accept any key, so an unset variable is sent as a placeholder.

Servers differ in how they honour ``n``: missing choices are requested again, and at most 4
stop strings go to the server (the OpenAI limit); all of them are applied to the returned text
afterwards, and so is ``stop_after_code_block`` (text after the first closed fenced code block
is dropped: no server can be told to stop there, as the opening fence looks the same).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from wizardcoder.credentials import read_key
from wizardcoder.errors import ExternalError
from wizardcoder.generate.base import Backend
from wizardcoder.generate.config import GenerateConfig
from wizardcoder.llm.endpoint import (
    is_loopback,
    local_server_commands,
    refused_message,
    refuses_connections,
)

PLACEHOLDER_KEY = "EMPTY"
MAX_SERVER_STOPS = 4


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, config: GenerateConfig, model_dir: str | Path):
        super().__init__(config, model_dir)
        self.model = config.model or str(model_dir)
        if refuses_connections(config.base_url):  # fail now, not after the SDK's retries
            raise ExternalError(refused_message(
                config.base_url, "generate.base_url",
                local_server_commands(config.base_url, self.model)))
        try:
            import openai
        except ImportError:
            raise ExternalError("the openai backend needs the package openai "
                                "(pip install openai)") from None
        api_key = read_key(config.api_key_env) or PLACEHOLDER_KEY
        # A proxy from the environment must never see (or break) loopback traffic; remote
        # endpoints honour HTTPS_PROXY as the SDK does by default.
        http_client = (openai.DefaultHttpxClient(trust_env=False)
                       if is_loopback(config.base_url) else None)
        self.client = openai.OpenAI(base_url=config.base_url, api_key=api_key, max_retries=3,
                                    http_client=http_client)
        self.pool = ThreadPoolExecutor(max_workers=config.batch_size,
                                       thread_name_prefix="wizardcoder-openai")

    def _request(self, prompt: str, n: int, seed: int | None) -> tuple[list[str], int]:
        cfg = self.config
        params = dict(model=self.model, max_tokens=cfg.max_new_tokens, n=n,
                      temperature=cfg.temperature, top_p=1.0 if cfg.greedy else cfg.top_p)
        if cfg.stop:
            params["stop"] = cfg.stop[:MAX_SERVER_STOPS]
        if seed is not None:
            params["seed"] = seed
        if cfg.openai_api == "chat":
            response = self.client.chat.completions.create(
                messages=[{"role": "user", "content": prompt}], **params)
            texts = [c.message.content or "" for c in response.choices]
        else:
            response = self.client.completions.create(prompt=prompt, **params)
            texts = [c.text or "" for c in response.choices]
        usage = getattr(response, "usage", None)
        tokens = getattr(usage, "completion_tokens", 0) or 0
        return texts, tokens

    def _complete(self, prompt: str, n: int, seed: int | None) -> tuple[list[str], int]:
        texts: list[str] = []
        new_tokens = 0
        attempts = 0
        while len(texts) < n:
            want = n - len(texts)
            sub_seed = None if seed is None else seed + attempts
            try:
                got, tokens = self._request(prompt, want, sub_seed)
            except Exception as exc:  # openai.APIError, httpx errors: all external
                raise ExternalError(f"{self.config.base_url} ({self.config.openai_api}, model "
                                    f"{self.model!r}) failed: {type(exc).__name__}: {exc}"
                                    ) from None
            new_tokens += tokens
            texts.extend(got[:want])
            attempts += 1
            if not got or attempts > n:
                raise ExternalError(f"{self.config.base_url} returned {len(texts)} of {n} "
                                    f"choices for one prompt")
        return texts, new_tokens

    def _generate(self, prompts: list[str], n: int,
                  seed: int | None) -> tuple[list[list[str]], int]:
        seeds = [None if seed is None else seed + i for i in range(len(prompts))]
        answers = list(self.pool.map(lambda args: self._complete(*args),
                                     [(p, n, s) for p, s in zip(prompts, seeds, strict=True)]))
        return [texts for texts, _ in answers], sum(tokens for _, tokens in answers)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()
