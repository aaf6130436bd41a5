"""Tiny offline models and a fake judge for the trainer's tests.

The tiny policy is a randomly initialised Llama (2 layers, hidden 32) with a byte-level tokenizer
built with the ``tokenizers`` library (256 byte tokens + 3 specials, no merges) and a one-line chat
template, saved to a folder so the trainer loads it through its normal ``policy.model: <path>`` path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from minirft.judge.base import JudgeBase, PairVerdict, Score

SPECIALS = ["<pad>", "<s>", "</s>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


def make_tiny_model(path: Path, *, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in byte_chars:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                      tie_word_embeddings=True, initializer_range=0.3)
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


def write_prompts(path: Path, n: int = 8) -> Path:
    rows = [{"prompt": f"Say something about {w}.", "reference": str(i)}
            for i, w in enumerate(["cats", "rain", "tea", "maps", "snow", "bread", "owls", "jazz"][:n])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class FakeJudge(JudgeBase):
    """A deterministic rubric judge: P(yes) of criterion `vowels` = share of vowels in the completion."""

    mode = "rubric"

    def __init__(self, fail_calls: Sequence[int] = ()):
        self.calls = 0
        self.fail_calls = set(fail_calls)
        self.closed = False

    def score_groups(self, rows, groups, rationales=False):
        self.calls += 1
        if self.calls in self.fail_calls:
            raise RuntimeError("judge backend exploded")
        out = []
        for gi, group in enumerate(groups):
            scores = []
            for ci, text in enumerate(group):
                p = sum(ch in "aeiou" for ch in text) / max(1, len(text))
                want = rationales if isinstance(rationales, bool) else rationales[gi][ci]
                scores.append(Score(p, {"vowels": p}, f"{len(text)} chars" if want else None))
            out.append(scores)
        return out

    def compare(self, row, a, b, rationale=False):
        return PairVerdict(0.5, 0.5, 0.5)

    def close(self):
        self.closed = True


def toy_reward(prompts, completions, **columns):
    """Learnable toy reward: the share of lowercase ASCII letters among the completion's characters
    (about 10% for the random byte-level model, so every group has some signal)."""
    return [sum("a" <= ch <= "z" for ch in c) / max(1, len(c)) for c in completions]
