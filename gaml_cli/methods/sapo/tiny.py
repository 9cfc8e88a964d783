"""Small causal LMs built from a config with random weights, and a character-level tokenizer
(trained with `tokenizers` on nothing but an alphabet): what `gaml align init-lm` writes, what
the tests load through the real from_pretrained path, and the starting point of the arithmetic
demo. The folder is a plain transformers model folder (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json with a small chat template)."""

from __future__ import annotations

import string
from pathlib import Path

ALPHABET = string.digits + string.ascii_letters + string.punctuation + " \n"
SPECIALS = ("<pad>", "<eos>", "<unk>")
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def char_tokenizer(alphabet: str = ALPHABET):
    """A PreTrainedTokenizerFast with one token per character of `alphabet` and <pad>, <eos>, <unk>."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list(dict.fromkeys(alphabet))
    vocab = {t: i for i, t in enumerate([*SPECIALS, *chars])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_config(arch: str, vocab_size: int, layers: int = 2, hidden: int = 64, heads: int = 4, context: int = 64,
                pad_id: int = 0, eos_id: int = 1):
    """A Llama-style or GPT-2 config of the given size (no dropout, tied embeddings)."""
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 3,
                           num_hidden_layers=layers, num_attention_heads=heads,
                           num_key_value_heads=max(1, heads // 2), max_position_embeddings=context,
                           tie_word_embeddings=True, pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=eos_id)
    if arch == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=context,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=pad_id,
                          eos_token_id=eos_id, bos_token_id=eos_id)
    raise ValueError(f"unknown architecture {arch!r} (llama or gpt2)")


def build_tiny_lm(out: str | Path, arch: str = "llama", layers: int = 2, hidden: int = 64, heads: int = 4,
                  context: int = 64, seed: int = 0, alphabet: str = ALPHABET) -> dict:
    """Write a random causal LM and its character tokenizer to `out`; returns a summary."""
    import torch
    from transformers import AutoModelForCausalLM

    from .lm import quiet_transformers

    quiet_transformers()
    tok = char_tokenizer(alphabet)
    cfg = tiny_config(arch, len(tok), layers, hidden, heads, context, tok.pad_token_id, tok.eos_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return {"out": str(out), "arch": arch, "parameters": sum(p.numel() for p in model.parameters()),
            "vocab": len(tok), "context": context, "layers": layers, "hidden": hidden}
