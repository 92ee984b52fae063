"""`wizardcoder exp ...`: DVC experiment helpers where raw flags are awkward.

Each helper prints the exact DVC command before running it, so the commands can be learnt
and used directly:

    wizardcoder exp rounds 3 [--queue] [--name NAME]   # dvc exp run -S '+rounds.r3=...'
    wizardcoder exp grid --rounds 1 2 3 [--baselines] [--ablate-methods] [--verify]
                         [--run] [-j N]
    wizardcoder exp compare [EXP ...] [--diff]          # headline metrics of each
                                                        # experiment (dvc exp show --json)
    wizardcoder exp select-rounds                       # evol-stop on the dev set
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from wizardcoder.config import load_section, read_params
from wizardcoder.errors import ConfigError, ExternalError
from wizardcoder.rounds import load_rounds, set_rounds_overrides

BASELINE_KINDS = ("seed_only", "equal_size")
DETAILS_DIR = "metrics/details"  # wizardcoder.headline: what `compare --diff` adds
PENDING = ("Queued", "Running")
POLL_S = 5.0


def dvc_command(args: list[str]) -> str:
    return shlex.join(["dvc", *args])


def run_dvc(args: list[str], capture: bool = False, check: bool = True, echo: bool = True,
            cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run ``dvc ARGS`` with this interpreter's DVC, printing the command first."""
    if echo:
        print(f"$ {dvc_command(args)}", flush=True)
    env = None
    if not capture and not sys.stdout.isatty() and "COLUMNS" not in os.environ:
        env = {**os.environ, "COLUMNS": "250"}   # DVC tables in logs: do not cut columns
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, text=True,
                          capture_output=capture, env=env)
    if check and proc.returncode != 0:
        tail = f": {(proc.stderr or proc.stdout or '').strip()[-2000:]}" if capture else ""
        raise ExternalError(f"`{dvc_command(args)}` failed with exit status "
                            f"{proc.returncode}{tail}")
    return proc


def exp_run_args(overrides: list[str], name: str | None = None, queue: bool = False,
                 force: bool = False) -> list[str]:
    args = ["exp", "run"]
    if queue:
        args.append("--queue")
    if name:
        args += ["--name", name]
    if force:
        args.append("--force")
    for override in overrides:
        args += ["-S", override]
    return args


def rounds_overrides(params: str, target: int) -> list[str]:
    """The `-S` overrides that take the workspace params from their round count to target."""
    if target < 1:
        raise ConfigError("exp rounds: the round count must be >= 1 (train on the seed rows "
                          "alone with -S merge.baseline=seed_only)")
    return set_rounds_overrides(len(load_rounds(params)), target)


@dataclass
class GridEntry:
    name: str
    overrides: list[str]


def grid_entries(params: str, rounds: list[int], baselines: list[str] | None = None,
                 ablate_methods: bool = False, prefix: str = "",
                 verify: bool = False) -> list[GridEntry]:
    """One experiment per setting: each round count, the baselines, the method ablations,
    and with ``verify`` a verified twin of each round count (``evolve.verify=tests``; the
    others then run unverified whatever the workspace says, so the pairs differ only in it).

    ``seed_only`` trains on the seed rows (it keeps the fewest rounds of the grid so its
    evolve stages come from the run-cache); ``equal_size`` is queued once per round count,
    matching that count's evolved set; an ablation zeroes one method at the most rounds.
    """
    if not rounds or any(n < 1 for n in rounds) or len(set(rounds)) != len(rounds):
        raise ConfigError("exp grid: --rounds takes distinct round counts >= 1, e.g. 1 2 3")
    rounds = sorted(rounds)
    data = read_params(params)
    keep = [] if (data.get("merge") or {}).get("baseline", "none") == "none" \
        else ["merge.baseline=none"]
    verified = (data.get("evolve") or {}).get("verify", "none") == "tests"
    plain = ["evolve.verify=none"] if verify and verified else []
    entries = [GridEntry(f"{prefix}rounds-{n}", rounds_overrides(params, n) + keep + plain)
               for n in rounds]
    if verify:
        on = [] if verified else ["evolve.verify=tests"]
        entries += [GridEntry(f"{prefix}verified-rounds-{n}",
                              rounds_overrides(params, n) + keep + on) for n in rounds]
    for kind in baselines or []:
        if kind not in BASELINE_KINDS:
            raise ConfigError(f"exp grid: unknown baseline {kind!r}; valid: "
                              f"{', '.join(BASELINE_KINDS)}")
        counts = rounds[:1] if kind == "seed_only" else rounds
        for n in counts:
            name = "seed-only" if kind == "seed_only" else f"equal-size-r{n}"
            entries.append(GridEntry(f"{prefix}{name}", rounds_overrides(params, n)
                                     + [f"merge.baseline={kind}"]))
    if ablate_methods:
        methods = (data.get("evolve") or {}).get("methods") or {}
        enabled = [m for m, weight in methods.items() if weight and weight > 0]
        if len(enabled) < 2:
            raise ConfigError("exp grid --ablate-methods needs at least two enabled methods "
                              "in evolve.methods")
        for method in enabled:
            entries.append(GridEntry(
                f"{prefix}no-{method.replace('_', '-')}-r{rounds[-1]}",
                rounds_overrides(params, rounds[-1]) + keep + [f"evolve.methods.{method}=0"]))
    return entries


def parse_queue_status(text: str) -> dict[str, str]:
    """{experiment name: status} from `dvc queue status` (the latest task of each name)."""
    status: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] != "Task" and re.fullmatch(r"[0-9a-f]{7,}", parts[0]):
            status[parts[1]] = parts[-1]
    return status


def wait_for(names: list[str], poll_s: float = POLL_S, timeout_s: float | None = None,
             cwd: str | Path | None = None) -> dict[str, str]:
    """Poll `dvc queue status` until none of ``names`` is queued or running."""
    print(f"$ {dvc_command(['queue', 'status'])}   # every {poll_s:g} s until done", flush=True)
    start, last = time.monotonic(), {}
    while True:
        text = run_dvc(["queue", "status"], capture=True, echo=False, cwd=cwd).stdout
        status = {n: s for n, s in parse_queue_status(text).items() if n in names}
        for name in names:
            if status.get(name) != last.get(name):
                print(f"  [{time.strftime('%H:%M:%S')}] {name}: {status.get(name, '?')}",
                      flush=True)
        last = status
        if all(status.get(n) not in PENDING for n in names):
            return status
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise ExternalError(f"experiments still running after {timeout_s:g} s: "
                                f"{', '.join(n for n in names if status.get(n) in PENDING)}")
        time.sleep(poll_s)


SHOW_ARGS = ["exp", "show", "--json", "--no-pager"]


def exp_show_json(cwd: str | Path | None = None) -> list:
    """What ``dvc exp show --json`` prints (the command is echoed first)."""
    out = run_dvc(SHOW_ARGS, capture=True, cwd=cwd).stdout
    try:
        return json.loads(out)
    except json.JSONDecodeError as exc:
        raise ExternalError(f"`{dvc_command(SHOW_ARGS)}` printed no JSON: {exc}") from None


def compare_table(show: list, names: list[str] | None = None) -> tuple[list[str], list[list]]:
    """(header, rows): one row per experiment of ``dvc exp show --json`` (the workspace, the
    baseline commit, its experiments; only ``names`` when given), with every headline
    metric (each metrics file's keys, named without the file as `dvc exp show` does unless
    two files share a key) and the params that differ between the rows shown."""
    from wizardcoder.config import flatten
    from wizardcoder.experiments.selection import parse_exp_show, workspace_entry

    baseline, experiments = parse_exp_show(show)
    entries = [e for e in (workspace_entry(show), baseline, *experiments) if e is not None]
    if names:
        entries = [e for e in entries if e.name in names or e.rev.startswith(tuple(names))]
    keys: dict[str, list[str]] = {}  # metric key -> files holding it
    for entry in entries:
        for path, data in entry.metrics.items():
            for key in flatten(data, keep_empty=False):
                files = keys.setdefault(key, [])
                if path not in files:
                    files.append(path)
    columns = [(path, key) for key, files in keys.items() for path in files]
    params = [flatten(e.params, keep_empty=False) for e in entries]
    changed = [k for k in dict.fromkeys(k for p in params for k in p)
               if len({json.dumps(p.get(k), sort_keys=True) for p in params}) > 1]
    header = ["experiment", *(key if len(keys[key]) == 1 else f"{path}:{key}"
                              for path, key in columns), *changed]
    rows = []
    for entry, flat in zip(entries, params, strict=True):
        values = [flatten(entry.metrics.get(path) or {}, keep_empty=False).get(key)
                  for path, key in columns]
        rows.append([entry.name, *values, *(flat.get(k) for k in changed)])
    return header, rows


def format_table(header: list[str], rows: list[list], markdown: bool = False) -> str:
    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    cells = [header, *([cell(v) for v in row] for row in rows)]
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in cells]
        lines.insert(1, "|" + "|".join("---" for _ in header) + "|")
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)


def compare(revs: list[str], markdown: bool = False, diff: bool = False) -> str:
    """The headline metrics of every experiment (the workspace, the baseline commit and its
    experiments; ``revs``: only those) beside the params that differ. ``diff``: then the
    full difference between two revisions (HEAD and the workspace, HEAD and one experiment,
    or two experiments): params, headline metrics, and every figure of the details files."""
    if diff and len(revs) > 2:
        raise ConfigError("exp compare --diff: give at most two experiments (or revisions)")
    header, rows = compare_table(exp_show_json(), revs if not diff else None)
    text = format_table(header, rows, markdown)
    print(text, flush=True)
    if diff:
        base = ["HEAD"] if len(revs) < 2 else []
        md = ["--md"] if markdown else []
        run_dvc(["params", "diff", *base, *revs, *md])
        run_dvc(["metrics", "diff", *base, *revs, *md])
        run_dvc(["metrics", "diff", *base, *revs, "--targets", DETAILS_DIR, *md])
    return text


def cmd_compare(args) -> None:
    compare(args.revs, args.md, getattr(args, "diff", False))


def cmd_rounds(args) -> None:
    run_dvc(exp_run_args(rounds_overrides(args.params, args.count), args.name, args.queue,
                         args.force))


def cmd_grid(args) -> None:
    baselines = None if args.baselines is None else (args.baselines or list(BASELINE_KINDS))
    entries = grid_entries(args.params, args.rounds, baselines, args.ablate_methods,
                           args.prefix, args.verify)
    for entry in entries:
        run_dvc(exp_run_args(entry.overrides, entry.name, queue=True, force=args.force))
    names = [e.name for e in entries]
    if not args.run:
        print(f"queued {len(names)} experiments; run them with: "
              f"{dvc_command(['queue', 'start', '-j', str(args.jobs)])}")
        return
    run_dvc(["queue", "start", "-j", str(args.jobs)])
    status = wait_for(names, poll_s=args.poll, timeout_s=args.timeout)
    compare(names)
    failed = [n for n in names if status.get(n) != "Success"]
    if failed:
        hints = "; ".join(dvc_command(["queue", "logs", n]) for n in failed)
        raise ExternalError(f"{len(failed)} experiment(s) did not succeed: "
                            f"{', '.join(failed)} (see: {hints})")


def cmd_select_rounds(args) -> dict:
    from wizardcoder.experiments.config import SelectConfig
    from wizardcoder.experiments.selection import format_selection, select_rounds
    from wizardcoder.jsonl import write_json

    select = load_section(args.params, "select", SelectConfig)
    record = select_rounds(exp_show_json(), select)
    write_json(args.out, record)
    print(format_selection(record))
    if record["chosen_rev"] == record["baseline_rev"]:
        print(f"wrote {args.out}; the baseline commit already has the chosen round count")
    else:
        print(f"wrote {args.out}; adopt the chosen experiment with: "
              f"{dvc_command(['exp', 'apply', record['chosen_experiment']])}")
    return record
