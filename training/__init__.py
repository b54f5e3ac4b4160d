"""training: the GPU side behind the OpenAI-compatible door, as three rooms with one-way arrows.

- serving: `fewtune serve` (`python -m training.serving`): the server app, ChatEngine, decoders,
  kernels. It includes the fine-tuning routes, so serving -> finetune.
- finetune: /v1/files and /v1/fine_tuning/jobs, the job worker and store, the API's
  hyperparameter rules. Each job trains in its own process, so finetune -> trainer.
- trainer: the LoRA trainer and its chat data (`python -m training.trainer`). Imports no room.

The hall, shared by the rooms and importing none of them: `api_errors` (APIError, error_body),
`base_models` (base model names and where they resolve to) and `served_adapters` (the
FEWTUNE_HOME/adapters layout that finetune publishes into and serving loads from).

Importing this package loads nothing heavy: torch and transformers are imported where used.
"""
