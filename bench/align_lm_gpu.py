"""Speed and memory of SAPO steps (segment generation by the EMA + the DPO update) on a 1B-class
Llama config with random weights, with LoRA and with all weights: JSON rows with generated
tokens/s, trained tokens/s, seconds per step and peak GPU memory.

    python bench/align_lm_gpu.py [--steps 3] [--batch-size 8] [--prompt-len 128] [--answer-len 256]
                                 [--segment-length 256] [--precision bf16] [--modes lora,full]
    python bench/align_lm_gpu.py --tiny --device cpu      # a smoke test of the script itself

The config is TinyLlama-1.1B's shape (hidden 2048, 22 layers, 32 heads, 4 key-value heads, SwiGLU
5632, vocabulary 32,000, context 2048). Random weights never emit EOS, so every segment is
generated to its full length: the worst case of a step. The first step (warm-up) is not timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--answer-len", type=int, default=256)
    ap.add_argument("--segment-length", type=int, default=256)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--modes", default="lora,full")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a tiny config (smoke test)")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from gaml_cli.methods.sapo.lm import add_lora
    from gaml_cli.methods.sapo.train import SapoConfig, sapo_train

    if args.tiny:
        cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    else:
        cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                          num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.precision]
    dev = torch.device(args.device)
    tok = SimpleNamespace(pad_token_id=0, eos_token_id=2)
    g = torch.Generator().manual_seed(0)
    n = args.batch_size * (args.steps + 1)
    rows = [(torch.randint(3, cfg.vocab_size, (args.prompt_len,), generator=g).tolist(),
             torch.randint(3, cfg.vocab_size, (args.answer_len,), generator=g).tolist() + [2]) for _ in range(n)]
    for mode in args.modes.split(","):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).to(dev)
        params = sum(p.numel() for p in model.parameters())
        if mode == "lora":
            model = add_lora(model, 16)
        else:
            model.requires_grad_(True)
        sc = SapoConfig(loss="dpo", steps=1, batch_size=args.batch_size, segment_length=args.segment_length,
                        lora_rank=16 if mode == "lora" else 0, checkpoint_every=0, lr=1e-5, buffer_size=2000)
        with tempfile.TemporaryDirectory() as d:
            sapo_train(model, tok, rows, sc, Path(d) / "warm", dev, ctx=cfg.max_position_embeddings)  # warm-up
            if dev.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            sc.steps = args.steps
            t0 = time.perf_counter()
            _, rep = sapo_train(model, tok, rows, sc, Path(d) / "run", dev, ctx=cfg.max_position_embeddings)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            sec = time.perf_counter() - t0
            log = [json.loads(l) for l in (Path(d) / "run" / "log.jsonl").read_text().splitlines()]
        gen_s = log[-1]["generation_seconds"]
        generated = args.steps * args.batch_size * args.segment_length
        trained = args.steps * args.batch_size * 2 * (args.prompt_len + args.answer_len + 1)
        print(json.dumps({
            "mode": mode, "parameters": params, "trained_parameters": rep["trainable_parameters"],
            "precision": args.precision, "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
            "steps": args.steps, "batch_size": args.batch_size, "prompt_len": args.prompt_len,
            "answer_len": args.answer_len, "segment_length": args.segment_length,
            "seconds_per_step": round(sec / args.steps, 3), "generation_seconds_per_step": round(gen_s / args.steps, 3),
            "generated_tokens_per_s": round(generated / gen_s, 1),
            "trained_tokens_per_s": round(trained / max(sec - gen_s, 1e-9), 1),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else None,
        }), flush=True)
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
