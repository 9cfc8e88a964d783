"""SAPO (Self-Augmented Preference Optimization, arXiv 2405.20830) for causal language models,
as gaml's own explicit loop on current transformers, and its peers (SFT, DPO, ORPO) through TRL.

    data.py     the three data formats (prompt/chosen, prompt/completion, messages) and TRL pairs
    lm.py       load a causal LM + tokenizer (alias, hub id, folder, peft adapter run), LoRA, save
    loss.py     sequence log-probs, DPO / hinge (with a reference) and ORPO (without), as in the papers
    buffer.py   the FIFO replay buffer drawn with probability proportional to 1 / (1 + times drawn)
    splice.py   the random cut point, the EMA model's segment, prefix + segment + rest of the chosen
    train.py    the loop: EMA policy, regeneration, buffer, loss, reference refresh, checkpoints
    run.py      `gaml align sapo` from one options object
    peers.py    `gaml align sft | dpo | orpo` through TRL's trainers (guarded imports)
    generate.py `gaml align generate`; tiny.py: a small Llama/GPT-2 + character tokenizer from data
"""
