"""`wizardcoder exp ...`: DVC experiment helpers where raw flags are awkward.

Each helper prints the exact DVC command before running it, so the commands can be learnt
and used directly:

    wizardcoder exp rounds 3 [--queue] [--name NAME]   # dvc exp run -S '+rounds.r3=...'
    wizardcoder exp grid --rounds 1 2 3 [--baselines] [--ablate-methods] [--verify]
                         [--run] [-j N]
    wizardcoder exp compare [EXP [EXP]]                 # dvc exp show (useful columns) +
                                                        # dvc metrics diff
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
# `dvc exp show --keep` patterns (matched at the start of each column name).
COMPARE_COLUMNS = (
    "Experiment", "State", r"metrics/score\.json:(plus_)?pass@",
    r"metrics/dev_score\.json:(plus_)?pass@",
    r"metrics/merge\.json:(rows|tokens_est|target_rows|shortfall_rows)$",
    r"metrics/train\.json:train_loss$", r"rounds\.", r"merge\.baseline",
    r"evolve\.verify$")
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


def compare_args(extra: list[str] | None = None) -> list[str]:
    return ["exp", "show", "--no-pager", "--drop", ".*", "--keep",
            "|".join(COMPARE_COLUMNS), *(extra or [])]


def compare(revs: list[str], extra: list[str] | None = None) -> None:
    """The experiments table (useful columns), then the metrics that changed between two
    revisions: HEAD and the workspace, HEAD and one experiment, or two experiments."""
    if len(revs) > 2:
        raise ConfigError("exp compare: give at most two experiments (or revisions)")
    run_dvc(compare_args(extra))
    base = ["HEAD"] if len(revs) == 1 else []
    run_dvc(["metrics", "diff", *base, *revs])


def cmd_compare(args) -> None:
    compare(args.revs, ["--md"] if args.md else None)


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
    run_dvc(compare_args())
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
    show_args = ["exp", "show", "--json", "--no-pager"]
    out = run_dvc(show_args, capture=True).stdout
    try:
        show = json.loads(out)
    except json.JSONDecodeError as exc:
        raise ExternalError(f"`{dvc_command(show_args)}` printed no JSON: {exc}") from None
    record = select_rounds(show, select)
    write_json(args.out, record)
    print(format_selection(record))
    if record["chosen_rev"] == record["baseline_rev"]:
        print(f"wrote {args.out}; the baseline commit already has the chosen round count")
    else:
        print(f"wrote {args.out}; adopt the chosen experiment with: "
              f"{dvc_command(['exp', 'apply', record['chosen_experiment']])}")
    return record
