"""Generation: benchmark prompts -> n raw completions per task -> sanitized programs.

Importing this package loads no model library; backends are imported when chosen.
"""

from wizardcoder.generation.base import Backend, BackendStats, make_backend
from wizardcoder.generation.benchmarks import load_benchmark
from wizardcoder.generation.config import GenerateConfig
from wizardcoder.generation.runner import (
    export_samples,
    generate_samples,
    prompt_text,
    read_samples,
)
from wizardcoder.generation.sanitize import sanitize

__all__ = ["Backend", "BackendStats", "GenerateConfig", "export_samples", "generate_samples",
           "load_benchmark", "make_backend", "prompt_text", "read_samples", "sanitize"]
