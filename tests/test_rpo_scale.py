"""The scale options of the preference trainer (methods/rpo/train.py): micro-batches give the
whole batch's gradient (Diffusion-DPO, SFT and Diffusion-RPO, whose loss couples the pairs),
gradient checkpointing leaves the gradient as it is, bf16 runs on CPU and fp16 is refused
there, RPO's default embeddings are the text encoder's vectors, CLIP embeddings by hand, and
two processes under torchrun (DDP over gloo) train one run."""

from __future__ import annotations


import pytest
import torch

from gaml_cli.core.errors import UsageError
from gaml_cli.methods.rpo import loss as L
from gaml_cli.methods.rpo import train as T
from test_rpo_train import CAPS, pairs, tiny_net


def _setup(ac, checkpointing: bool = False, n: int = 6):
    net = tiny_net()
    caps = [CAPS[i % len(CAPS)] for i in range(n)]
    _, chosen, rejected = pairs(n)
    policy, _ = T.prepare_policy(net, ac)
    if checkpointing:
        policy.unet.enable_gradient_checkpointing()
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    ref = T.Reference(policy, lora=True)
    fam = T.EDMFamily(policy)
    g = torch.Generator().manual_seed(7)
    sigma = (torch.randn(n, generator=g) * 1.2 - 1.2).exp()
    noise = torch.randn(n, 3, 8, 8, generator=g)
    cond = fam.encode(caps, "cpu")
    return policy, ref, fam, chosen, rejected, cond, sigma, noise, fam.embed(cond)


def _grads(policy):
    return torch.cat([p.grad.flatten() for p in policy.parameters() if p.requires_grad])


def _grad_after(ac, micro: int, checkpointing: bool = False, n: int = 6):
    """The trained weights' gradient of one batch through batch_backward."""
    ac = T.AlignConfig(**{**ac.__dict__, "micro_batch": micro})
    policy, ref, fam, chosen, rejected, cond, sigma, noise, emb = _setup(ac, checkpointing, n)
    loss, stats = T.batch_backward(ac, policy, policy, ref, chosen, rejected, cond, sigma, noise, emb, fam)
    return float(loss), stats, _grads(policy)


def _close(a, b, rel=1e-5):
    return float((a - b).norm()) <= rel * float(b.norm())


@pytest.mark.parametrize("method", ["dpo", "sft", "rpo"])
def test_micro_batches_give_the_whole_batchs_gradient(method):
    ac = T.AlignConfig(method=method, lora_rank=4, beta=50.0, tau=0.5)
    loss, stats, full = _grad_after(ac, 0)
    for micro in (4, 1 if method != "rpo" else 2):  # uneven split (4 + 2) and small passes
        loss_m, stats_m, part = _grad_after(ac, micro)
        assert loss_m == pytest.approx(loss, rel=1e-5)
        assert stats_m["implicit_accuracy"] == stats["implicit_accuracy"]
        assert _close(part, full), (micro, (part - full).norm() / full.norm())
    assert full.abs().sum() > 0


def test_rpo_micro_batches_keep_the_cross_pair_terms():
    """Accumulating RPO's loss per micro-batch (what plain gradient accumulation would do) drops
    the terms between pairs of different micro-batches and gives another gradient; the two-pass
    path of batch_backward gives the whole batch's (test above)."""
    ac = T.AlignConfig(method="rpo", lora_rank=4, beta=50.0, tau=0.5)
    _, _, full = _grad_after(ac, 0)
    policy, ref, fam, chosen, rejected, cond, sigma, noise, emb = _setup(ac)
    for c in (slice(0, 3), slice(3, 6)):
        loss, _ = T.step_loss(ac, T.pair_errors(policy, ref, chosen[c], rejected[c], cond[c], sigma[c], noise[c], fam),
                              emb[c])
        (loss / 2).backward()
    assert not _close(_grads(policy), full, rel=1e-2)


def test_gradient_checkpointing_leaves_the_gradient_as_it_is():
    ac = T.AlignConfig(method="dpo", lora_rank=4, beta=50.0)
    _, _, plain = _grad_after(ac, 0)
    _, _, ckpt = _grad_after(ac, 0, checkpointing=True)
    policy = _setup(ac, checkpointing=True)[0]
    assert any(getattr(m, "gradient_checkpointing", False) for m in policy.unet.modules())  # it is on
    assert _close(ckpt, plain)


def test_bf16_runs_on_cpu_and_fp16_is_refused(tmp_path):
    caps, chosen, rejected = pairs()
    ac = T.AlignConfig(method="dpo", steps=2, batch_size=4, lora_rank=4, beta=50.0, checkpoint_every=0,
                       precision="bf16", gradient_checkpointing=True, micro_batch=2)
    policy, report = T.align(tiny_net(), caps, chosen, rejected, ac, tmp_path / "a", torch.device("cpu"))
    assert report["steps"] == 2 and report["loss"] == pytest.approx(0.6931, abs=0.05)
    assert all(p.dtype == torch.float32 for p in policy.parameters())  # master weights stay fp32
    with pytest.raises(UsageError, match="fp16 needs a GPU"):
        T.align(tiny_net(), caps, chosen, rejected, T.AlignConfig(**{**ac.__dict__, "precision": "fp16"}),
                tmp_path / "b", torch.device("cpu"))
    with pytest.raises(UsageError, match="larger than the per-process batch"):
        T.align(tiny_net(), caps, chosen, rejected, T.AlignConfig(**{**ac.__dict__, "micro_batch": 8}),
                tmp_path / "c", torch.device("cpu"))


def test_default_rpo_embeddings_are_the_text_encoders_vectors():
    """Not the token ids the UNet's condition is made of: the text encoder's output, the vector
    the UNet is conditioned on. Captions that share most words get closer weights than ids do."""
    net = tiny_net()
    fam = T.EDMFamily(net)
    ids = fam.encode(CAPS, "cpu")
    assert ids.dtype == torch.long
    e = fam.embed(ids)
    with torch.no_grad():
        assert torch.equal(e, net.text(ids).float())
    assert e.shape == (len(CAPS), net.text(ids).shape[1]) and e.dtype == torch.float32


def test_clip_embeddings_by_hand(tmp_path):
    pytest.importorskip("transformers")
    from transformers import CLIPModel, CLIPTokenizer

    from gaml_cli.methods.rpo.embed import pair_embeddings
    from sd_tiny import build_tiny_clip

    clip = build_tiny_clip(tmp_path)
    caps = CAPS[:3]
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    model = CLIPModel.from_pretrained(clip).eval()
    tok = CLIPTokenizer.from_pretrained(clip)
    with torch.no_grad():
        t = tok(caps, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
        o = model(input_ids=t.input_ids, attention_mask=t.attention_mask,
                  pixel_values=((x + 1) / 2 - torch.tensor(L_MEAN).view(1, 3, 1, 1)) / torch.tensor(L_STD).view(1, 3, 1, 1))
    nt = torch.nn.functional.normalize(o.text_embeds, dim=-1)
    ni = torch.nn.functional.normalize(o.image_embeds, dim=-1)
    assert pair_embeddings("model", caps, x, str(clip)) is None
    et = pair_embeddings("clip-text", caps, x, str(clip))
    ei = pair_embeddings("clip-image", caps, x, str(clip))
    both = pair_embeddings("clip", caps, x, str(clip))
    assert torch.allclose(et @ et.T, nt @ nt.T, atol=1e-5)
    assert torch.allclose(ei @ ei.T, ni @ ni.T, atol=1e-4)
    assert torch.allclose(both @ both.T, (nt @ nt.T + ni @ ni.T) / 2, atol=1e-4)  # the mean of the two cosines
    w = L.rpo_weights(both, 0.5)
    assert torch.allclose(w.sum(1), torch.ones(3))
    with pytest.raises(UsageError):
        pair_embeddings("minilm", caps, x, str(clip))


L_MEAN = [0.48145466, 0.4578275, 0.40821073]
L_STD = [0.26862954, 0.26130258, 0.27577711]
