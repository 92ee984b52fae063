"""Build the bundled MultiPL-E HumanEval files (wizardcoder/resources/multipl_e/).

    python scripts/build_multipl_e.py --git-dir /path/to/DeepSeek-Coder/.git

Provenance: MultiPL-E (Cassano et al., "MultiPL-E: A Scalable and Polyglot Approach to
Benchmarking Neural Code Generation", MIT licence) translates HumanEval into other languages.
Its repository (github.com/nuprl/MultiPL-E) is too large to fetch here; DeepSeek-Coder's
repository (github.com/deepseek-ai/DeepSeek-Coder, commit 2f9fd85927c669dae3c0fbb2d607274023af243e,
``Evaluation/HumanEval/data/humaneval-<lang>.jsonl``) vendors MultiPL-E's rows unchanged. Their
``prompt``, ``tests`` and ``stop_tokens`` equal MultiPL-E's
``prompts/humaneval-<lang>-reworded.json`` (the "reworded" variant of MultiPL-E 2.x, as its
Hugging Face dataset ``nuprl/MultiPL-E`` served the ``humaneval-<lang>`` configs before v3);
only ``original`` (a path on MultiPL-E's build machine) differs. This script keeps MultiPL-E's
own fields (name, language, prompt, doctests, original, prompt_terminology, tests,
stop_tokens), drops DeepSeek's copies (``task_id``, ``test``), sorts rows by HumanEval number
and writes gzip files with a fixed mtime: rerunning it gives the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import subprocess
from pathlib import Path

SOURCE = "Evaluation/HumanEval/data/humaneval-{lang}.jsonl"
LANGUAGES = ("cpp", "java", "js", "ts", "php", "rs", "go", "sh", "lua", "rb")
FIELDS = ("name", "language", "prompt", "doctests", "original", "prompt_terminology", "tests",
          "stop_tokens")
OUT = Path(__file__).resolve().parents[1] / "wizardcoder" / "resources" / "multipl_e"


def build(git_dir: str, commit: str, out: Path) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for lang in LANGUAGES:
        text = subprocess.run(["git", f"--git-dir={git_dir}", "show",
                               f"{commit}:{SOURCE.format(lang=lang)}"], check=True,
                              capture_output=True, text=True).stdout
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        for row in rows:
            missing = [f for f in FIELDS if f not in row]
            if missing or row.get("tests") != row.get("test", row["tests"]):
                raise SystemExit(f"{lang}: row {row.get('name')} lacks {missing} or its "
                                 "test/tests differ")
        rows.sort(key=lambda r: int(re.match(r"HumanEval_(\d+)_", r["name"]).group(1)))
        body = "".join(json.dumps({f: r[f] for f in FIELDS}, ensure_ascii=False) + "\n"
                       for r in rows).encode()
        buffer = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as handle:
            handle.write(body)
        (out / f"humaneval-{lang}.jsonl.gz").write_bytes(buffer.getvalue())
        counts[lang] = len(rows)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--git-dir", required=True, help="a clone of deepseek-ai/DeepSeek-Coder")
    parser.add_argument("--commit", default="2f9fd85927c669dae3c0fbb2d607274023af243e")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    print(json.dumps(build(args.git_dir, args.commit, Path(args.out))))


if __name__ == "__main__":
    main()
