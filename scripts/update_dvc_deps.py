"""Rewrite each dvc.yaml stage's module deps from the import graph, with the same derivation
tests/test_dvc_deps.py checks (run it after adding, moving or importing a module):

    python scripts/update_dvc_deps.py
"""

import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def derived_deps(spec: dict) -> list[str]:
    """Data deps as written, then every module the command imports; a package whose every
    module is needed collapses to its directory."""
    from tests.test_dvc_deps import _entry, _resources

    files = _entry(spec["cmd"])
    files |= _resources(files)
    needed = {str(p.relative_to(REPO)) for p in files}
    for folder in sorted({str(Path(r).parent) for r in needed if r.startswith("wizardcoder/")}):
        modules = {str(p.relative_to(REPO)) for p in (REPO / folder).glob("*.py")}
        if folder != "wizardcoder" and modules and modules <= needed:
            needed = (needed - modules) | {folder}
    data = [d for d in spec.get("deps", []) if not d.startswith(("wizardcoder/", "stages/"))]
    return data + sorted(needed)


def main() -> None:
    sys.path.insert(0, str(REPO))
    from tests.test_dvc_deps import _stages

    text = (REPO / "dvc.yaml").read_text()
    parsed = yaml.safe_load(text)["stages"]
    for name, spec in _stages().items():
        if spec.get("always_changed"):
            continue
        indent = " " * (8 if "foreach" in parsed[name] else 6)
        block = re.search(rf"^  {re.escape(name)}:\n(.*?)(?=^  \S|\Z)", text, re.S | re.M).group(0)
        listed = re.search(rf"^{indent[:-2]}deps:\n((?:{indent}- .*\n)+)", block, re.M)
        lines = "".join(f"{indent}- {dep}\n" for dep in derived_deps(spec))
        text = text.replace(block, block[:listed.start(1)] + lines + block[listed.end(1):])
    (REPO / "dvc.yaml").write_text(text)


if __name__ == "__main__":
    main()
