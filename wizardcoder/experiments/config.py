"""params.yaml section `select`: the held-out dev set that chooses the round count
(stages generate_dev and score_dev, ``wizardcoder exp select-rounds``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from wizardcoder.benchmarks.devset import DEV_BENCHMARKS
from wizardcoder.config import option, require


@dataclass
class SelectConfig:
    """params.yaml section `select`: the held-out dev set that chooses the round count."""

    dev_benchmark: str = option(
        "seed_dev", choices=DEV_BENCHMARKS,
        help="Dev set scored by the generate_dev/score_dev stages and used by `wizardcoder exp "
             "select-rounds`; never the reported benchmark. 'seed_dev': tasks held out of the "
             "bundled seeds (offline; merge.holdout_dev keeps them out of training); 'mbpp+': "
             "MBPP+ via evalplus (cached data or MBPP_OVERRIDE_PATH).")
    dev_limit: int = option(0, help="Score the first N dev tasks only; 0 = all of them.")
    metric: str = option(
        "pass@1", help="Key of metrics/dev_score.json that round selection maximises: pass@k "
                       "(k up to generate.n_samples), or plus_pass@k for mbpp+ (base and "
                       "plus tests both passed).")
    tolerance: float = option(
        0.0, help="Dev scores within this much of the best count as ties; ties go to the "
                  "fewest rounds (0 = only exact ties).")

    def __post_init__(self):
        require(self.dev_limit >= 0, "select", "dev_limit", "an integer >= 0 (0 = all)")
        require(bool(re.fullmatch(r"(plus_)?pass@[1-9][0-9]*", self.metric)), "select",
                "metric", "a pass@k or plus_pass@k key such as 'pass@1'")
        require(self.tolerance >= 0, "select", "tolerance", "a number >= 0")
