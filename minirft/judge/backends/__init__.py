"""Judge backends, one :class:`minirft.judge.base.Evaluator` each: ``llama_cpp`` (a GGUF in-process,
the default), ``torch`` (a Hugging Face model, or the policy's own base) and ``http`` (an
OpenAI-compatible server)."""
