"""A tiny in-process Llama model and tokenizer for tests and dry runs: no download, no weights file.

The tokenizer is a byte-level BPE trained in a few milliseconds on a built-in corpus, with the
same ChatML template and special tokens as SmolLM2, so every code path that renders chat
prompts or masks prompt tokens behaves as it does with the real model.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Answer the question using the passage below. What is the capital of France? Paris.",
    "Instruction: summarise the text. Response: a short summary of the text.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "A contract is an agreement between two parties that creates obligations.",
    "Write a homework question about linear algebra: compute the determinant of a matrix.",
    "0 1 2 3 4 5 6 7 8 9 yes no maybe true false { } [ ] \" : , { \"name\": \"x\" }",
    "system user assistant You are a helpful AI assistant.",
]


def tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE with ChatML specials; identical on every call (deterministic training)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_model(
    tokenizer: PreTrainedTokenizerFast | None = None,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A few-layer Llama with random weights, seeded, in eval mode."""
    tokenizer = tokenizer or tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    return model.eval()
