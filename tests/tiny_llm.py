"""A tiny random Llama model with a locally built tokenizer, for fast tests without downloads.

``make_tiny_llm(path)`` writes an ordinary Hugging Face folder (config, safetensors, tokenizer
with a ChatML-like chat template, generation config) that ``load_llm(path)`` and
``AutoModelForCausalLM.from_pretrained`` both accept. Built in well under a second.
"""

from __future__ import annotations

from pathlib import Path

import torch

SPECIAL_TOKENS = ["<unk>", "<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]

# Words the bundle prompts use, so tokenised test prompts are mostly known words.
_CORPUS = """
you are a helpful assistant that builds product bundles from a user session
the user bought these items in one session please group them into bundles
a bundle is a set of items that are often bought together answer in json
item title category price electronic clothing food phone case charger cable
shirt jeans shoes socks hat bread milk cheese coffee tea sugar apple banana
system user assistant example input output bundles intent reason because
one two three four five six seven eight nine ten and or with for of to in
{ } [ ] : , . " ' - 0 1 2 3 4 5 6 7 8 9 id name list group set none yes no
"""

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_tokenizer(*, with_pad: bool = True, chat_template: bool = True):
    """A word-level fast tokenizer over ``_CORPUS`` plus ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted(set(_CORPUS.split()) | set("{}[]:,.\"'-"))
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="<|im_end|>",
        pad_token="<pad>" if with_pad else None,
        additional_special_tokens=["<|im_start|>", "</s>"],
        model_max_length=512,
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_tiny_llm(
    path: Path | str,
    *,
    seed: int = 0,
    with_pad: bool = True,
    chat_template: bool = True,
) -> Path:
    """Write a tiny random LlamaForCausalLM + tokenizer folder at ``path`` and return it."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = build_tiny_tokenizer(with_pad=with_pad, chat_template=chat_template)
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.pad_token_id if with_pad else None
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,  # exercise grouped-query attention like SmolLM2
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    # A larger init than the default 0.02 makes logits spread out, so greedy ties (which could
    # flip under batching's float noise) do not happen.
    config.initializer_range = 0.5
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos_id, pad_token_id=pad_id
    )
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
