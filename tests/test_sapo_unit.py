"""SAPO's pieces by hand: the losses, the replay buffer (inverse-count draws, FIFO eviction, draw
counts across a checkpoint), the splice, the EMA update, the reference refresh at its step, the
gradient reaching the policy through both the chosen and the rejected answers, and gaml's DPO
loss against TRL's DPOTrainer on one fixed batch."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from gaml_cli.methods.sapo import loss as L
from gaml_cli.methods.sapo.buffer import ReplayBuffer
from gaml_cli.methods.sapo.splice import cut_points, splice, trim_segment
from gaml_cli.methods.sapo.train import SapoConfig, batch_loss, ema_update, swapped, trainable


def _sig(x):
    return 1 / (1 + math.exp(-x))


# ------------------------------------------------------------------------------------------ losses
def test_dpo_and_hinge_losses_by_hand():
    pi_w, pi_l = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    ref_w, ref_l = torch.tensor([-3.5, -4.0]), torch.tensor([-3.0, -3.0])
    beta = 0.1
    # u_i = beta * ((pi_w - ref_w) - (pi_l - ref_l))
    u = [beta * ((-3.0 + 3.5) - (-4.0 + 3.0)), beta * ((-5.0 + 4.0) - (-2.0 + 3.0))]  # 0.15, -0.2
    loss, stats = L.dpo_loss(pi_w, pi_l, ref_w, ref_l, beta, "dpo")
    assert float(loss) == pytest.approx(sum(-math.log(_sig(x)) for x in u) / 2, rel=1e-6)
    assert float(stats["accuracy"]) == 0.5
    hinge, _ = L.dpo_loss(pi_w, pi_l, ref_w, ref_l, beta, "hinge")
    assert float(hinge) == pytest.approx(sum(max(0.0, 1 - x) for x in u) / 2, rel=1e-6)


def test_orpo_loss_by_hand():
    mean_w, mean_l = torch.tensor([-0.5, -1.0]), torch.tensor([-1.5, -0.7])
    nll = torch.tensor(0.8)
    lam = 0.05

    def odds(lp):
        p = math.exp(lp)
        return math.log(p / (1 - p))

    r = [odds(-0.5) - odds(-1.5), odds(-1.0) - odds(-0.7)]
    want = 0.8 + lam * sum(-math.log(_sig(x)) for x in r) / 2
    loss, stats = L.orpo_loss(mean_w, mean_l, nll, lam)
    assert float(loss) == pytest.approx(want, rel=1e-6)
    assert float(stats["accuracy"]) == 0.5


def test_sequence_logps_count_response_tokens_only():
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 7)
    ids = torch.tensor([[1, 2, 3, 4, 0]])
    resp = torch.tensor([[0, 0, 1, 1, 0]])  # prompt 1, 2; response 3, 4; then padding
    s, n = L.sequence_logps(logits, ids, resp)
    lp = torch.log_softmax(logits, -1)
    assert float(n) == 2
    assert float(s) == pytest.approx(float(lp[0, 1, 3] + lp[0, 2, 4]), rel=1e-6)


# ------------------------------------------------------------------------------------------ buffer
def test_buffer_draws_in_proportion_to_inverse_counts():
    buf = ReplayBuffer(10)
    for i in range(3):
        buf.push([i], [1], [2])
    buf.items[0].draws, buf.items[1].draws, buf.items[2].draws = 0, 1, 3
    w = buf.weights()
    assert w.tolist() == pytest.approx([1 / 1 / (1 + 1 / 2 + 1 / 4), 1 / 2 / 1.75, 1 / 4 / 1.75])
    # frequencies: many draws with the counts frozen follow the weights
    gen = torch.Generator().manual_seed(0)
    idx = torch.multinomial(w, 40000, replacement=True, generator=gen)
    freq = torch.bincount(idx, minlength=3).double() / 40000
    assert freq.tolist() == pytest.approx(w.tolist(), abs=0.01)
    # and a draw counts: an item drawn k times weighs 1 / (1 + k) afterwards
    before = {it.id: it.draws for it in buf.items}
    picked = buf.draw(5, gen)
    for it in buf.items:
        assert it.draws == before[it.id] + sum(p.id == it.id for p in picked)


def test_buffer_draws_favour_fresh_items_over_time():
    buf = ReplayBuffer(100)
    for i in range(4):
        buf.push([i], [1], [2])
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        buf.draw(1, gen)
    draws = [it.draws for it in buf.items]
    assert sum(draws) == 200
    new = buf.push([9], [1], [2])  # a fresh item among ones drawn ~50 times each: weight 1 against ~1/51
    w = buf.weights()
    assert float(w[-1]) == pytest.approx(1 / (1 + sum(1 / (1 + d) for d in draws)), rel=1e-9) and float(w[-1]) > 0.9
    picked = [it.id for it in buf.draw(20, gen)]
    assert picked.count(new) >= 15


def test_buffer_is_fifo():
    buf = ReplayBuffer(3)
    ids = [buf.push([i], [i], [i]) for i in range(5)]
    assert ids == [0, 1, 2, 3, 4]
    assert [it.id for it in buf.items] == [2, 3, 4] and [it.prompt for it in buf.items] == [[2], [3], [4]]


def test_buffer_state_round_trip_keeps_ids_and_draw_counts():
    from gaml_cli.core.checkpoint import CheckpointDir

    buf = ReplayBuffer(3)
    for i in range(4):
        buf.push([i, i + 1], [7] * (i + 1), [8, 9])
    gen = torch.Generator().manual_seed(3)
    buf.draw(4, gen)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        ck = CheckpointDir(d)
        ck.save(1, {"buffer": buf.state_dict()})
        _, state, _ = ck.load()
    again = ReplayBuffer(1)
    again.load_state_dict(state["buffer"])
    assert again.size == 3 and again.next_id == 4
    assert [(it.id, it.prompt, it.chosen, it.rejected, it.draws) for it in again.items] == \
        [(it.id, it.prompt, it.chosen, it.rejected, it.draws) for it in buf.items]
    # the next draws are the same as without the round trip
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert [i.id for i in buf.draw(6, g1)] == [i.id for i in again.draw(6, g2)]


# ------------------------------------------------------------------------------------------ splice
def test_splice_by_hand():
    chosen = [10, 11, 12, 13, 14, 1]  # 1 = EOS
    # cut at 2, a segment of two tokens replaces 12, 13; the rest of the chosen follows
    assert splice(chosen, 2, [20, 21], eos_id=1) == [10, 11, 20, 21, 14, 1]
    # a segment that ends with EOS ends the response
    assert splice(chosen, 2, [20, 1], eos_id=1) == [10, 11, 20, 1]
    # a segment longer than what is left: nothing of the chosen follows
    assert splice(chosen, 4, [20, 21, 22], eos_id=1) == [10, 11, 12, 13, 20, 21, 22]
    assert splice(chosen, 0, [], eos_id=1) == chosen


def test_trim_segment_and_cut_points():
    assert trim_segment([5, 6, 1, 0, 0], eos_id=1, pad_id=0) == [5, 6, 1]
    assert trim_segment([5, 6, 0, 0], eos_id=1, pad_id=0) == [5, 6]
    gen = torch.Generator().manual_seed(0)
    cuts = cut_points([6] * 500 + [2, 1], gen)
    assert set(cuts[:500]) == {0, 1, 2, 3, 4}  # never at the EOS: at least one real token regenerated
    assert cuts[500:] == [0, 0]


# ------------------------------------------------------------------------------------------ EMA and reference
def test_ema_update_by_hand_and_swap():
    p = {"w": torch.nn.Parameter(torch.tensor([1.0, 3.0]))}
    ema = {"w": torch.tensor([5.0, -1.0])}
    ema_update(ema, p, 0.5)
    assert ema["w"].tolist() == [3.0, 1.0]  # 0.5 * ema + 0.5 * theta
    ema_update(ema, p, 0.75)
    assert ema["w"].tolist() == pytest.approx([0.75 * 3 + 0.25 * 1, 0.75 * 1 + 0.25 * 3])
    with swapped(p, ema):
        assert p["w"].tolist() == ema["w"].tolist()
    assert p["w"].tolist() == [1.0, 3.0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from gaml_cli.methods.sapo.lm import load_lm
    from gaml_cli.methods.sapo.tiny import build_tiny_lm

    d = tmp_path_factory.mktemp("lm") / "gpt2"
    build_tiny_lm(d, "gpt2", layers=1, hidden=32, heads=2, context=32, seed=0)
    model, tok, _ = load_lm(str(d))
    return d, model, tok


def _rows(tok, n=6):
    from gaml_cli.methods.sapo.data import tokenize_example

    return [tokenize_example(tok, f"{a}+{a + 1}=", str(2 * a + 1)) for a in range(10, 10 + n)]


def test_reference_refreshes_from_the_ema_at_the_configured_step(tiny, tmp_path):
    from gaml_cli.core.checkpoint import CheckpointDir
    from gaml_cli.methods.sapo.train import sapo_train

    _, model, tok = tiny
    model = copy.deepcopy(model).requires_grad_(True)
    cfg = SapoConfig(steps=3, batch_size=2, ref_sync_steps=2, checkpoint_every=1, lr=1e-2, segment_length=4,
                     lora_rank=0, seed=0)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, report = sapo_train(model, tok, _rows(tok), cfg, tmp_path, "cpu", ctx=32)
    assert report["reference_refreshes"] == 1
    ck = CheckpointDir(tmp_path / "checkpoints", keep=5)
    states = {}
    for step in (2, 3):
        states[step] = ck.load(ck.path_for(step))[1]
    # after step 2 the reference is the EMA of that step; it stays so through step 3
    for n in start:
        assert torch.equal(states[2]["ref"][n], states[2]["ema"][n])
        assert torch.equal(states[3]["ref"][n], states[2]["ema"][n])
    assert any(not torch.equal(states[3]["ref"][n], states[3]["ema"][n]) for n in start)
    assert any(not torch.equal(states[2]["ref"][n], start[n]) for n in start)


@pytest.mark.parametrize("kind", ["dpo", "orpo"])
def test_gradient_reaches_the_policy_through_chosen_and_rejected(tiny, kind):
    from gaml_cli.methods.sapo.buffer import Item

    _, model, tok = tiny
    model = copy.deepcopy(model).requires_grad_(True)
    params = trainable(model)
    rows = _rows(tok, 2)
    items = [Item(i, p, r, r[:1] + [tok.convert_tokens_to_ids("7")] + r[2:]) for i, (p, r) in enumerate(rows)]
    grabbed = {}

    def hook(module, args, output):
        if output.logits.requires_grad:  # the policy's forward (the reference's runs without gradient)
            output.logits.retain_grad()
            grabbed["logits"] = output.logits

    h = model.register_forward_hook(hook)
    try:
        ref = {n: p.detach().clone() + 0.01 for n, p in params.items()}
        cfg = SapoConfig(loss=kind, lora_rank=0)
        loss, _ = batch_loss(model, items, cfg, tok.pad_token_id, "cpu", ref, params, 8.0)
        logits = grabbed["logits"]
        loss.backward()
    finally:
        h.remove()
    g = logits.grad.abs().sum(dim=(1, 2))
    b = len(items)
    assert (g[:b] > 0).all(), "no gradient through the chosen answers"
    assert (g[b:] > 0).all(), "no gradient through the rejected answers"


def test_gaml_dpo_loss_equals_trl_dpotrainer_on_one_batch(tiny, tmp_path):
    pytest.importorskip("trl")
    import datasets
    from trl import DPOConfig, DPOTrainer

    from gaml_cli.methods.sapo.buffer import Item
    from gaml_cli.methods.sapo.data import tokenize_example

    path, model, tok = tiny
    policy = copy.deepcopy(model)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    reference = copy.deepcopy(model)
    pairs = [{"prompt": "12+13=", "chosen": "25", "rejected": "26"},
             {"prompt": "40+9=", "chosen": "49", "rejected": "4"}]
    beta = 0.3
    items = []
    for i, r in enumerate(pairs):
        p, c = tokenize_example(tok, r["prompt"], r["chosen"])
        p2, rj = tokenize_example(tok, r["prompt"], r["rejected"])
        assert p == p2
        items.append(Item(i, p, c, rj))
    params = trainable(policy.requires_grad_(True))
    ref = {n: t.detach().clone() for n, t in trainable(reference.requires_grad_(True)).items()}
    cfg = SapoConfig(loss="dpo", beta=beta, lora_rank=0)
    ours, _ = batch_loss(policy, items, cfg, tok.pad_token_id, "cpu", ref, params, 1.0)

    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=beta, per_device_train_batch_size=2, report_to=[],
                     use_cpu=True, bf16=False, max_length=32, disable_tqdm=True)
    trainer = DPOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(reference), args=args,
                         train_dataset=datasets.Dataset.from_list(pairs), processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    theirs = trainer.compute_loss(trainer.model, batch)
    assert float(theirs) == pytest.approx(float(ours), rel=1e-5, abs=1e-6)


def test_ema_of_half_precision_weights_is_kept_in_fp32():
    from gaml_cli.methods.sapo.train import clone_params

    p = {"w": torch.nn.Parameter(torch.full((3,), 1.0, dtype=torch.bfloat16))}
    ema = clone_params(p)
    assert ema["w"].dtype == torch.float32
    with torch.no_grad():
        p["w"].fill_(1.0 + 2 ** -7)  # the smallest step bf16 has above 1
    for _ in range(3):
        ema_update(ema, p, 0.999)  # each update moves the EMA by ~8e-6: lost in bf16, kept in fp32
    assert float(ema["w"][0]) > 1.0
    with swapped(p, ema):
        assert p["w"].dtype == torch.bfloat16
    assert p["w"].dtype == torch.bfloat16 and float(p["w"][0]) == 1.0 + 2 ** -7
