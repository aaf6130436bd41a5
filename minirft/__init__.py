"""minirft: single-node reinforcement fine-tuning with a local LLM judge."""

__version__ = "0.1.0"
