"""Stage `merge`: seed + rounds, deduplicated and decontaminated; the baselines (docs/merge.md)."""
