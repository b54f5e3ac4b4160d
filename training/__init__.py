"""training: the GPU side behind the OpenAI-compatible door.

- base_models: resolve a base model name (embedded SmolLM2, a folder, a Hugging Face id).
- engine: ChatEngine, one base model + LoRA adapters.
- server: `fewtune serve` (create_app, serve; `python -m training.server`).

Importing this package loads nothing heavy: torch and transformers are imported where used.
"""
