"""Stage `log`: the experiment on its MLflow parent run, the MLflow model, section `tracking`."""
