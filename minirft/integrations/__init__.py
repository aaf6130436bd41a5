"""Adapters that take minirft's judge to other trainers (TRL's GRPOTrainer, accelerate, DeepSpeed)."""
