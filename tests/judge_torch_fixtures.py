"""A tiny random Llama and a byte-level BPE tokenizer, both built offline in well under a second.

The tokenizer is trained on the fly on text full of the judge's label words, so "Yes", " Yes",
" No", "A", " B", digits... each come out as one token, as they do in real judge vocabularies.
Weights are random (seeded): the model's opinions are noise, but deterministic.
"""

from __future__ import annotations

LABELS = ["Yes", "No", "yes", "no", "YES", "NO", "A", "B"] + [str(d) for d in range(10)]
CORPUS = (
    "You are a careful, impartial judge. Question: Does the response answer the question? Answer: Yes\n"
    "Candidate response: <response> hello </response> Explanation: it is polite. Better response (A or B): A\n"
    "<|im_start|>system <|im_end|> <|im_start|>user <|im_start|>assistant Task User request Reference answer\n"
)


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    words = " ".join(f"{w} {w}\n{w}:" for w in LABELS)
    tok.train_from_iterator([CORPUS, words] * 50, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def make_model(vocab_size: int, seed: int = 0, n_layer: int = 2, hidden: int = 64, attention_dropout: float = 0.0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=n_layer, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=4096, tie_word_embeddings=False, bos_token_id=1,
                      eos_token_id=2, pad_token_id=0, attention_dropout=attention_dropout)
    model = LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():  # random init is near-uniform over labels; sharpen it so scores vary
        model.lm_head.weight.mul_(8.0)
    return model


def tiny_judge_parts(seed: int = 0):
    tok = make_tokenizer()
    return make_model(len(tok), seed), tok
