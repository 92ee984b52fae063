"""Generation: benchmark prompts -> n raw completions per task -> sanitized programs.

Importing this package loads no model library; backends are imported when chosen.
"""

from wizardcoder.benchmarks.problems import load_benchmark
from wizardcoder.generate.base import Backend, BackendStats, make_backend
from wizardcoder.generate.config import GenerateConfig
from wizardcoder.generate.runner import (
    export_samples,
    generate_samples,
    prompt_text,
    read_samples,
)
from wizardcoder.sanitize import sanitize

__all__ = ["Backend", "BackendStats", "GenerateConfig", "export_samples", "generate_samples",
           "load_benchmark", "make_backend", "prompt_text", "read_samples", "sanitize"]
