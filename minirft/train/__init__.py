"""GRPO + LoRA training: ``loop`` (the loop and its loss), ``rollout`` (sampling and scoring, a
generator), ``policy`` (model backends, generation, per-token log-probs), ``checkpoint``, ``cli``."""
