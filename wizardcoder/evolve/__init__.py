"""Stage `evolve@rN`: one Code Evol-Instruct round (docs/evolution.md)."""
