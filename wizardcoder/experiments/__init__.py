"""`wizardcoder exp` and `report`, stages `generate_dev` / `score_dev`, section `select`."""
