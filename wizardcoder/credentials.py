"""API keys and other secrets: recognising them, reading them, keeping them out of sight.

A key may reach this project only through an environment variable whose *name* is
configured (``llm.api_key_env``, ``generate.api_key_env``): params are logged to MLflow and
committed to git, so a value there would leak. Every rule about secrets lives here, so the
config validators, the LLM client, MLflow tracking and the processes we start all agree on
what counts as one:

- :func:`check_key_env` rejects a configured name that is a key itself (without echoing it);
- :func:`read_key` reads the key from the variable so named, at run time only;
- :func:`redact` and :func:`redact_key_shaped` take secrets out of text meant for humans
  (errors, logs, MLflow params and tags);
- :func:`without_secrets` takes them out of an environment handed to another process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from wizardcoder.config import require

REDACTED = "[redacted]"

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Prefixes of well-known secret formats (OpenAI, Anthropic, HF, GitHub, Groq, ...).
_KEY_PREFIXES = ("sk-", "sk_", "sess-", "hf_", "ghp_", "gsk_", "xai-", "pk-", "rk-")
# Servers sometimes echo part of a key in errors ("Incorrect API key provided: sk-...abcd").
_KEY_SHAPED = re.compile(r"\b(?:sk|sess|hf|ghp|gsk|xai|rk|pk)[-_][A-Za-z0-9*_\-]{6,}")
# Names of environment variables (and query parameters) that hold credentials.
_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)
# Params keys (flattened, e.g. "extra.api_key") whose value is a credential. Narrower than
# _SECRET_NAME: "llm.api_key_env" holds a variable's name and "max_tokens" a count.
_SECRET_PARAM = re.compile(r"(^|[._])(api_key|secret|password|token|auth)$", re.IGNORECASE)
# Shorter environment values ("1", "true", a port) are settings; replacing them everywhere
# would garble the text without hiding anything.
_MIN_SECRET_ENV_VALUE = 8
_MIN_REDACTED = 4


def looks_like_key(value: str) -> bool:
    """True for strings that are probably a secret rather than a variable name."""
    if value.lower().startswith(_KEY_PREFIXES):
        return True
    # Environment variable names are short and rarely mix case with digits; keys are long
    # random strings.
    mixed = (re.search(r"[a-z]", value) and re.search(r"[A-Z]", value)
             and re.search(r"[0-9]", value))
    return len(value) >= 32 and bool(mixed)


def check_key_env(section: str, name: str, value: str) -> None:
    """Validate a setting that names the environment variable holding a key (``name`` is
    the field, e.g. api_key_env); a value that looks like the key itself is not echoed."""
    require(not looks_like_key(value), section, name,
            "the NAME of an environment variable (e.g. OPENAI_API_KEY), not the key "
            "itself; the value given looks like a key and is not shown -- remove it from "
            "params and rotate it if it was committed")
    require(bool(ENV_NAME.fullmatch(value)), section, name,
            "an environment variable name: letters, digits and _, e.g. OPENAI_API_KEY")


def read_key(env_name: str) -> str | None:
    """The key held by the environment variable ``env_name``; None when unset or blank."""
    return os.environ.get(env_name, "").strip() or None


def is_secret_name(name: str) -> bool:
    """True for a variable (or query parameter) named like a credential (KEY, TOKEN...)."""
    return bool(_SECRET_NAME.search(name))


def is_secret_param(key: str) -> bool:
    """True for a flattened params key whose value is a credential (``x.api_key``)."""
    return bool(_SECRET_PARAM.search(key))


def secret_env_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of the secret-named variables of ``environ`` (default: this process's)."""
    environ = os.environ if environ is None else environ
    return [v for k, v in environ.items()
            if is_secret_name(k) and len(v) >= _MIN_SECRET_ENV_VALUE]


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each of ``secrets`` replaced by [redacted]."""
    for secret in secrets:
        if len(secret) >= _MIN_REDACTED and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_key_shaped(text: str) -> str:
    """``text`` with anything shaped like a well-known key (``sk-...``) replaced, for text
    from a server, which may quote a key we never had."""
    return _KEY_SHAPED.sub(REDACTED, text)


def without_secrets(environ: Mapping[str, str], *names: str) -> dict[str, str]:
    """``environ`` less every secret-named variable and the variables ``names`` (a configured
    key variable may be called anything): the environment of a process that needs none."""
    return {k: v for k, v in environ.items() if not is_secret_name(k) and k not in names}
