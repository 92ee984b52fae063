"""The fine-tuned model as an MLflow pyfunc model (MLflow "models from code").

The log stage logs this file with the model directory as an artifact and the prompt template
as ``model_config``, so the logged model is self-contained: loading it needs transformers and
torch, not this project. It takes instructions and answers them the way the model was trained
(Alpaca-style prompt, greedy by default)::

    model = mlflow.pyfunc.load_model("models:/wizardcoder-sft/1")
    model.predict(["Write a function that reverses a string."], params={"max_new_tokens": 128})

The weights are plain Hugging Face files under the artifact ``model_dir``:
``mlflow.artifacts.download_artifacts(uri + "/artifacts/model_dir")`` then ``from_pretrained``.
This file must import nothing from wizardcoder (it runs where wizardcoder is not installed).
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class InstructionModel(PythonModel):
    def load_context(self, context) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = context.artifacts["model_dir"]
        self.template = context.model_config["prompt_template"]
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path)
        self.model.eval()

    def predict(self, context, model_input, params: dict | None = None) -> list[str]:
        import torch

        params = params or {}
        if hasattr(model_input, "iloc"):  # a DataFrame: its first column
            model_input = model_input.iloc[:, 0].tolist()
        answers = []
        for instruction in model_input:
            prompt = self.template.format(instruction=instruction.strip())
            ids = self.tokenizer(prompt, return_tensors="pt")
            with torch.no_grad():
                out = self.model.generate(
                    **ids, max_new_tokens=int(params.get("max_new_tokens", 256)),
                    do_sample=False, pad_token_id=self.tokenizer.eos_token_id)
            answers.append(self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:],
                                                 skip_special_tokens=True).strip())
        return answers


mlflow.models.set_model(InstructionModel())
