"""A tiny random llama-architecture GGUF written on the fly (the `gguf` package), for fast judge tests.

The vocabulary is a SentencePiece-style one: every byte (byte fallback), the printable ASCII
characters with and without the word-start marker "▁", and the label words the judge reads
("Yes", " Yes", "yes", "No", "A", "B", digits...) with all their prefixes, so llama.cpp's SPM
tokenizer can merge them into single tokens. Weights are random (seeded): the model's opinions are
noise, but they are deterministic, which is all the protocol tests need.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LABEL_WORDS = ["Yes", "No", "yes", "no", "YES", "NO", "A", "B", "Response", "Answer", "Explanation"]


def _vocab() -> tuple[list[str], list[float], list[int]]:
    import gguf

    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(gguf.TokenType.BYTE)
    pieces: list[str] = []
    for c in map(chr, range(33, 127)):
        pieces += [c, "▁" + c]
    pieces.append("▁")
    for w in LABEL_WORDS + [str(d) for d in range(10)]:
        for k in range(2, len(w) + 1):
            pieces += [w[:k], "▁" + w[:k]]
    seen = set(tokens)
    for p in pieces:
        if p not in seen:
            seen.add(p)
            tokens.append(p)
            types.append(gguf.TokenType.NORMAL)
    # SPM merges the highest-scoring pair first: longer pieces score higher so words come out whole.
    scores = [0.0] * 3 + [-1000.0] * 256 + [float(len(t)) for t in tokens[259:]]
    return tokens, scores, [int(t) for t in types]


def write_tiny_gguf(path: str | Path, *, n_embd: int = 64, n_layer: int = 2, n_head: int = 4,
                    n_ff: int = 128, seed: int = 0) -> Path:
    """Write a ~1 MB random llama model with the vocabulary above; returns the path."""
    import gguf

    path = Path(path)
    tokens, scores, types = _vocab()
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("minirft-tiny-judge")
    w.add_context_length(4096)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(False)

    def t(name: str, *shape: int, scale: float = 0.2) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    n_vocab = len(tokens)
    t("token_embd.weight", n_vocab, n_embd, scale=1.0)
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    t("output.weight", n_vocab, n_embd, scale=0.5)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            t(f"blk.{i}.{name}.weight", n_embd, n_embd)
        t(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def distinct_prefixes(engine, paths, score_last: bool = False) -> int:
    """The size of the token trie of these queries (each a list of segment texts after the header):
    every distinct token prefix, the text tokenized as one (``score_last``: the last segment on its own),
    as the llama_cpp engine does."""
    prefixes = set()
    for segments in paths:
        parts = ("".join(segments[:-1]), segments[-1]) if score_last else ("".join(segments),)
        toks = tuple(t for seg in parts for t in engine.tokenize(seg))
        prefixes.update(toks[:k] for k in range(1, len(toks) + 1))
    return len(prefixes)


def trie_tokens(judge, rows, groups, criteria) -> int:
    """What a rubric step decodes besides the header (cached between calls): its token trie."""
    L = judge.layout
    return distinct_prefixes(judge.evaluator.engine, [(L.row(row), L.response(cand), L.criterion_cue(c["question"]))
                                                      for row, group in zip(rows, groups) for cand in group
                                                      for c in criteria])


def segment_trie_tokens(judge, rows, groups, criteria) -> int:
    """What a trie of whole segments decodes: each distinct row, response and cue once."""
    eng, L = judge.evaluator.engine, judge.layout
    head = "Candidate response:\n<response>\n"  # shared by a row's candidates: goes with the row
    total = 0
    for row, group in zip(rows, groups):
        total += len(eng.tokenize(L.row(row) + head))
        for cand in group:
            assert L.response(cand).startswith(head)
            total += len(eng.tokenize(L.response(cand)[len(head):]))
            total += sum(len(eng.tokenize(L.criterion_cue(c["question"]))) for c in criteria)
    return total
