"""The small caption encoder inside text-conditional teachers."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from gaml_cli.diffusion.models import PAD, TextEncoder  # noqa: E402

VOCAB = ["a", "red", "blue", "circle", "square", "on", "background"]


def test_tokenize_cls_unknown_and_padding():
    enc = TextEncoder(VOCAB, out_dim=8, max_len=8)
    ids = enc.tokenize(["a red circle", "a Purple circle!", ""])
    assert ids[0].tolist()[:4] == [1, enc.index["a"], enc.index["red"], enc.index["circle"]]
    assert ids[1, 2].item() == 2  # unknown word -> [UNK]
    assert ids[2].tolist() == [1] + [PAD] * 7  # "" is [CLS] alone: the null caption
    assert ids[0, 4:].eq(PAD).all()


def test_mean_pooling_is_the_masked_mean_of_contextual_outputs():
    torch.manual_seed(0)
    enc = TextEncoder(VOCAB, out_dim=8, max_len=8, pool="mean").eval()
    ids = enc.tokenize(["a red circle on a blue background"])
    with torch.no_grad():
        pos = torch.arange(8)
        h = enc.norm(enc.encoder(enc.tok(ids) + enc.pos(pos)[None], src_key_padding_mask=ids == PAD))
        n = int((ids != PAD).sum())
        expected = enc.proj(h[0, :n].mean(0))
        assert torch.allclose(enc(ids)[0], expected, atol=1e-5)


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_word_order_matters(pool):
    torch.manual_seed(0)
    enc = TextEncoder(VOCAB, out_dim=8, pool=pool).eval()
    with torch.no_grad():
        a, b = enc(enc.tokenize(["a red circle on a blue background", "a blue circle on a red background"]))
    assert (a - b).abs().max() > 1e-3
