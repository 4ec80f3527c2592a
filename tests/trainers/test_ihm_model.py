"""The Item History Model (eq. 1-3) and the SASRec user tower: attention, gating, ablation, shapes."""

from __future__ import annotations

import torch

from trainers.models.ihm import IHMConfig, ItemHistoryModel
from trainers.models.sasrec import IdItemTower, SASRecConfig, SASRecUserTower


def _batch(B=3, M=5, hist_len=(0, 2, 5), F=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(0, 1000, (B, M), generator=g)
    n = torch.tensor(hist_len)
    users = torch.where(torch.arange(M)[None, :] < n[:, None], users, torch.full_like(users, -1))
    return {"item_id": torch.arange(B) + 7, "creator_id": torch.arange(B) + 3, "category": torch.arange(B),
            "item_dense": torch.rand(B, F, generator=g), "hist_users": users, "hist_len": n}


def _model(**kw):
    torch.manual_seed(0)
    cfg = IHMConfig(dim=8, heads=kw.pop("heads", 3), max_history=kw.pop("max_history", 5), id_buckets=512,
                    n_categories=16, n_item_dense=2, **kw)
    return ItemHistoryModel(cfg).eval()


def test_shapes():
    out = _model().explain(_batch())
    assert out.e.shape == (3, 8) and out.static.shape == (3, 8)
    assert out.agg.shape == (3, 3, 8) and out.attn.shape == (3, 3, 6) and out.gate.shape == (3, 3)
    assert torch.allclose(out.e.norm(dim=-1), torch.ones(3))


def test_item_without_history_is_its_static_path():
    m = _model()
    b = _batch()
    out = m.explain(b)
    # row 0 has no history: all attention on E_S, so every Agg_h = E_S and e = normalize(E_S)
    assert torch.allclose(out.attn[0, :, -1], torch.ones(3))
    assert torch.allclose(out.agg[0], out.static[0].expand(3, 8), atol=1e-6)
    static = _model(static_only=True)
    static.load_state_dict(m.state_dict())
    assert torch.allclose(out.e[0], static(b)[0], atol=1e-6)


def test_attention_sums_to_one_and_padding_gets_zero():
    out = _model().explain(_batch())
    assert torch.allclose(out.attn.sum(-1), torch.ones(3, 3))
    assert (out.attn[1, :, 2:5] == 0).all() and (out.attn[1, :, :2] > 0).all()  # row 1: 2 users of 5 slots
    assert (out.attn[2] > 0).all()  # row 2: full history
    assert torch.allclose(out.gate.sum(-1), torch.ones(3))


def test_values_are_the_raw_embeddings():
    m = _model()
    b = _batch()
    out = m.explain(b)
    users, _ = m.history(b)
    tokens = torch.cat([m.user_emb(users.clamp(min=0)), out.static[:, None, :]], 1)  # (B, M+1, d)
    assert torch.allclose(out.agg, torch.einsum("bht,btd->bhd", out.attn, tokens), atol=1e-6)
    expected = torch.nn.functional.normalize((out.gate[..., None] * out.agg).sum(1), dim=-1)
    assert torch.allclose(out.e, expected, atol=1e-6)


def test_one_head_gate_is_one_and_e_is_agg():
    out = _model(heads=1).explain(_batch())
    assert torch.equal(out.gate, torch.ones(3, 1))
    assert torch.allclose(out.e, torch.nn.functional.normalize(out.agg[:, 0], dim=-1), atol=1e-6)


def test_static_only_ignores_history():
    m = _model(static_only=True)
    b = _batch()
    b2 = dict(b, hist_users=torch.randint(0, 1000, b["hist_users"].shape), hist_len=torch.tensor([5, 5, 5]))
    assert torch.equal(m(b), m(b2))
    assert torch.allclose(m(b), torch.nn.functional.normalize(m.static_embedding(b), dim=-1))


def test_history_permutation_invariance():
    m = _model()
    b = _batch()
    perm = torch.tensor([3, 0, 4, 1, 2])
    b2 = dict(b)
    b2["hist_users"] = b["hist_users"].clone()
    b2["hist_users"][2] = b["hist_users"][2, perm]  # row 2 has 5 real users
    b2["hist_users"][1, :2] = b["hist_users"][1, [1, 0]]
    assert torch.allclose(m(b), m(b2), atol=1e-6)


def test_history_changes_the_embedding_and_keeps_the_most_recent_users():
    m = _model(max_history=2)
    b = _batch()
    out = m.explain(b)
    assert out.attn.shape[-1] == 3  # 2 users + E_S
    users, valid = m.history(b)
    assert users[2].tolist() == b["hist_users"][2, 3:5].tolist() and valid[2].all()
    assert not torch.allclose(out.e[2], torch.nn.functional.normalize(out.static[2], dim=-1))


def _seq(B=3, L=6, n=(0, 3, 6), F=2):
    g = torch.Generator().manual_seed(1)
    return {"item_id": torch.randint(0, 100, (B, L), generator=g), "creator_id": torch.zeros(B, L, dtype=torch.long),
            "category": torch.zeros(B, L, dtype=torch.long), "item_dense": torch.rand(B, L, F, generator=g),
            "seq_len": torch.tensor(n)}


def test_sasrec_user_tower_is_causal_and_reads_the_last_items():
    torch.manual_seed(0)
    items = IdItemTower(8, 512)
    tower = SASRecUserTower(SASRecConfig(dim=8, layers=2, heads=1, ff=16, dropout=0.0, seq_len=4), items.embed).eval()
    s = _seq()
    u = tower(s)
    assert u.shape == (3, 8) and torch.allclose(u.norm(dim=-1), torch.ones(3))
    s2 = {k: v.clone() for k, v in s.items()}
    s2["item_id"][1, 3:] = 99  # padding after row 1's 3 items: no effect (causal)
    s2["item_id"][2, :2] = 98  # row 2 has 6 items, seq_len 4: only the last 4 are read
    assert torch.allclose(tower(s2), u, atol=1e-6)
    s2["item_id"][1, 0] = 97
    assert not torch.allclose(tower(s2)[1], u[1])
    assert torch.allclose(tower(s2)[0], u[0])  # empty sequence: the BOS output, whatever the padding


def test_sasrec_shares_its_item_embedding_module():
    from trainers.models.ihm import StaticItemEmbedding

    es = StaticItemEmbedding(8, 512, 16, 2)
    tower = SASRecUserTower(SASRecConfig(dim=8, seq_len=4), es)
    assert any(p is es.proj.weight for p in tower.parameters())


def test_sasrec_every_position_is_the_user_vector_of_its_prefix():
    torch.manual_seed(0)
    items = IdItemTower(8, 512)
    tower = SASRecUserTower(SASRecConfig(dim=8, layers=1, ff=16, dropout=0.0, seq_len=6), items.embed).eval()
    s = _seq()
    y, n = tower.forward_all(s)  # (3, 7, 8)
    s3 = dict(s, seq_len=torch.tensor([2, 2, 2]))
    assert torch.allclose(y[:, 2], tower(s3), atol=1e-6)  # position 2 = after the first 2 items
    assert torch.allclose(y[torch.arange(3), n], tower(s), atol=1e-6)


def test_history_dropout_acts_only_in_training():
    m = _model(history_dropout=0.5)
    b = _batch(B=3, M=5, hist_len=(5, 5, 5))
    ref = m.explain(b).attn  # eval mode: every user attended
    assert (ref > 0).all()
    m.train()
    torch.manual_seed(1)
    attn = m.explain(b).attn
    assert (attn[..., :5] == 0).any() and (attn[..., 5] > 0).all()  # some users masked, E_S never
    assert torch.allclose(attn.sum(-1), torch.ones(3, 3))
