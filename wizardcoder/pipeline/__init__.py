"""Stage glue: each module loads its params section, runs the library code, writes the
stage's outputs atomically and logs one MLflow run. `wizardcoder.cli` dispatches here."""
