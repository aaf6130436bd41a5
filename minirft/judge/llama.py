"""The default backend: a GGUF judge in-process through llama-cpp-python, batched with shared prefixes."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from minirft.errors import MinirftError
from minirft.judge import scoring
from minirft.judge.core import Evaluation
from minirft.judge.engine import Engine, Query


class LlamaEvaluator:
    """Label probabilities from :class:`Engine` logits. The model loads on first use, once."""

    def __init__(self, model_path: str, *, n_ctx: int, n_batch: int, n_threads: int | None,
                 n_gpu_layers: int, max_seqs: int, deterministic: bool) -> None:
        self.model_path = model_path
        self._kw = dict(n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads, n_gpu_layers=n_gpu_layers,
                        max_seqs=max_seqs, deterministic=deterministic)
        self._engine: Engine | None = None
        self._ids: dict[tuple, list[list[int]]] = {}

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(self.model_path, **self._kw)
        return self._engine

    def label_ids(self, classes: Sequence[tuple[str, ...]]) -> list[list[int]]:
        """Token ids of each class's single-token surface forms (e.g. "Yes", " Yes", "yes")."""
        key = tuple(classes)
        if key not in self._ids:
            ids = []
            for forms in classes:
                found = sorted({t for t in (self.engine.single_token(f) for f in forms) if t is not None})
                if not found:
                    raise MinirftError(f"judge model {self.model_path}: none of {list(forms)} is a single token; "
                                       "this model cannot be used as a judge with these labels")
                ids.append(found)
            self._ids[key] = ids
        return self._ids[key]

    def evaluate(self, queries: Sequence[Query], classes: Sequence[tuple[str, ...]]) -> list[Evaluation]:
        ids = self.label_ids(classes)
        flat = [t for group in ids for t in group]
        bounds = np.cumsum([0] + [len(g) for g in ids])
        out = []
        for res in self.engine.run(queries, flat):
            probs = scoring.class_probs([res.logits[bounds[c]:bounds[c + 1]] for c in range(len(ids))])
            out.append(Evaluation(probs, res.text))
        return out

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
