"""Next-User model: attention masks entry by entry, causality and padding functionally, ablation switches,
truncation to the most recent users, and the docs snippet."""

import re
from pathlib import Path

import pytest
import torch

from trainers.models.next_user import (
    NextUserConfig,
    NextUserModel,
    decoder_attention_mask,
    encoder_attention_mask,
    query_attention_mask,
    truncate_sequence,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "models" / "next_user.md"
LENS = torch.tensor([3, 1])


def _allowed(rows: list[str]) -> torch.Tensor:
    """'11010' per row -> bool matrix of allowed (True = may attend)."""
    return torch.tensor([[c == "1" for c in r.replace(" ", "")] for r in rows])


# ------------------------------------------------------------------------------------- masks
# tokens: p1 p2 | u1 u2 u3 | CLS   (k=2, L=3); row = query, column = key

ENC_CAUSAL_CLS = {
    3: ["11 000 0", "11 000 0", "11 100 0", "11 110 0", "11 111 0", "11 111 1"],
    1: ["11 000 0", "11 000 0", "11 100 0", "11 100 0", "11 100 0", "11 100 1"],
}
ENC_FULL_CLS = {3: ["11 111 1"] * 6, 1: ["11 100 1"] * 6}
ENC_CAUSAL_NOCLS = {
    3: ["11 000", "11 000", "11 100", "11 110", "11 111"],
    1: ["11 000", "11 000", "11 100", "11 100", "11 100"],
}
ENC_FULL_NOCLS = {3: ["11 111"] * 5, 1: ["11 100"] * 5}


@pytest.mark.parametrize("causal,use_cls,expected", [
    (True, True, ENC_CAUSAL_CLS), (False, True, ENC_FULL_CLS),
    (True, False, ENC_CAUSAL_NOCLS), (False, False, ENC_FULL_NOCLS),
])
def test_encoder_mask_every_entry(causal, use_cls, expected):
    m = encoder_attention_mask(2, 3, LENS, causal=causal, use_cls=use_cls)
    T = 2 + 3 + int(use_cls)
    assert m.shape == (2, T, T) and m.dtype == torch.bool
    for b, n in enumerate(LENS.tolist()):
        assert torch.equal(~m[b], _allowed(expected[n])), (b, (~m[b]).int())


# queries: u^1 u^2 u^3 u^4 next; keys as above
DEC_CAUSAL_CLS = {
    3: ["11 000 0", "11 100 0", "11 110 0", "11 111 0", "11 111 1"],
    1: ["11 000 0", "11 100 0", "11 100 0", "11 100 0", "11 100 1"],
}
DEC_FULL_CLS = {3: ["11 111 1"] * 5, 1: ["11 100 1"] * 5}
DEC_CAUSAL_NOCLS = {
    3: ["11 000", "11 100", "11 110", "11 111", "11 111"],
    1: ["11 000", "11 100", "11 100", "11 100", "11 100"],
}
DEC_FULL_NOCLS = {3: ["11 111"] * 5, 1: ["11 100"] * 5}


@pytest.mark.parametrize("causal,use_cls,expected", [
    (True, True, DEC_CAUSAL_CLS), (False, True, DEC_FULL_CLS),
    (True, False, DEC_CAUSAL_NOCLS), (False, False, DEC_FULL_NOCLS),
])
def test_decoder_cross_mask_every_entry(causal, use_cls, expected):
    m = decoder_attention_mask(2, 3, LENS, causal=causal, use_cls=use_cls)
    assert m.shape == (2, 5, 2 + 3 + int(use_cls))
    for b, n in enumerate(LENS.tolist()):
        assert torch.equal(~m[b], _allowed(expected[n])), (b, (~m[b]).int())


# query self-attention: u^1 u^2 u^3 u^4 next; valid queries are u^1..u^{n+1} and next
QRY_CAUSAL = {3: ["10000", "11000", "11100", "11110", "11111"], 1: ["10000", "11000", "11000", "11000", "11001"]}
QRY_FULL = {3: ["11111"] * 5, 1: ["11001"] * 5}


@pytest.mark.parametrize("causal,expected", [(True, QRY_CAUSAL), (False, QRY_FULL)])
def test_query_self_attention_mask_every_entry(causal, expected):
    m = query_attention_mask(3, LENS, causal=causal)
    assert m.shape == (2, 5, 5)
    for b, n in enumerate(LENS.tolist()):
        assert torch.equal(~m[b], _allowed(expected[n])), (b, (~m[b]).int())


def test_masks_reject_zero_prefixes():
    with pytest.raises(ValueError):
        encoder_attention_mask(0, 3, LENS)


# ------------------------------------------------------------------------------------- model

L = 5


def _cfg(**kw) -> NextUserConfig:
    base = dict(dim=8, heads=2, layers=2, ff=16, seq_len=L, id_buckets=257, n_categories=16, n_item_dense=2)
    base.update(kw)
    return NextUserConfig(**base)


def _model(**kw) -> NextUserModel:
    torch.manual_seed(0)
    return NextUserModel(_cfg(**kw)).eval()


def _batch(seq_users: list[list[int]], seq_len: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    B = len(seq_len)
    return {
        "item_id": torch.randint(0, 1000, (B,), generator=g), "category": torch.randint(0, 16, (B,), generator=g),
        "creator_id": torch.randint(0, 1000, (B,), generator=g), "item_dense": torch.rand(B, 2, generator=g),
        "seq_users": torch.tensor(seq_users), "seq_len": torch.tensor(seq_len),
    }


def _run(model: NextUserModel, batch):
    with torch.no_grad():
        return model(batch)


SEQ = [[11, 12, 13, 14, 15], [21, 22, -1, -1, -1], [-1, -1, -1, -1, -1]]
SEQ_LEN = [5, 2, 0]


def test_output_shapes_and_unit_norm():
    out = _run(_model(), _batch(SEQ, SEQ_LEN))
    assert out.u_hat.shape == (3, L + 1, 8) and out.u_next.shape == (3, 8)
    assert torch.allclose(out.u_next.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(out.u_hat.norm(dim=-1), torch.ones(3, L + 1), atol=1e-5)
    assert torch.isfinite(out.u_hat).all()  # the empty sequence still has the prefixes to attend to


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("use_cls", [True, False])
def test_padded_ids_have_no_effect(causal, use_cls):
    model = _model(causal=causal, use_cls=use_cls)
    a = _run(model, _batch(SEQ, SEQ_LEN))
    other = [[11, 12, 13, 14, 15], [21, 22, 7, 8, 9], [3, 4, 5, 6, 7]]
    b = _run(model, _batch(other, SEQ_LEN))
    assert torch.allclose(a.u_hat, b.u_hat, atol=1e-6) and torch.allclose(a.u_next, b.u_next, atol=1e-6)


def test_padded_tokens_have_no_effect_in_the_backbone():
    """The ids of padding are sanitised before the embedding; the masks alone must also hide the tokens."""
    model = _model()
    batch = _batch(SEQ, SEQ_LEN)
    n = batch["seq_len"]
    with torch.no_grad():
        prefix = model.prefix_prompts(batch)
        tokens = model.user_emb(batch["seq_users"].clamp(min=0))
        noisy = tokens.clone()
        pad = torch.arange(L)[None, :] >= n[:, None]
        noisy[pad] = torch.randn(int(pad.sum()), 8) * 10
        a, b = model.backbone(prefix, tokens, n), model.backbone(prefix, noisy, n)
    assert torch.allclose(a.u_hat, b.u_hat, atol=1e-5) and torch.allclose(a.u_next, b.u_next, atol=1e-5)


@pytest.mark.parametrize("train", [False, True])  # eval may take PyTorch's fused fast path, train does not
@pytest.mark.parametrize("j", [0, 2, 4])
def test_causality_changing_user_j(j, train):
    """Changing user j (0-based slot j, the paper's u_{j+1}) leaves u^_1..u^_{j+1} unchanged, moves the
    later ones and u^_next."""
    model = _model().train(train)
    seq = [[11, 12, 13, 14, 15]]
    changed = [list(seq[0])]
    changed[0][j] = 99
    a, b = _run(model, _batch(seq, [5])), _run(model, _batch(changed, [5]))
    assert torch.allclose(a.u_hat[:, : j + 1], b.u_hat[:, : j + 1], atol=1e-6)
    assert not torch.allclose(a.u_hat[:, j + 1], b.u_hat[:, j + 1], atol=1e-4)
    assert not torch.allclose(a.u_next, b.u_next, atol=1e-4)


def test_non_causal_lets_every_position_see_every_user():
    model = _model(causal=False)
    a = _run(model, _batch([[11, 12, 13, 14, 15]], [5]))
    b = _run(model, _batch([[11, 12, 13, 14, 99]], [5]))
    assert not torch.allclose(a.u_hat[:, 0], b.u_hat[:, 0], atol=1e-4)  # u^_1 sees the last user


def test_cls_token_only_reaches_u_next():
    model = _model()
    batch = _batch(SEQ, SEQ_LEN)
    a = _run(model, batch)
    with torch.no_grad():
        model.backbone.cls.add_(torch.randn(8))  # not a constant shift: LayerNorm would erase that
    b = _run(model, batch)
    assert torch.allclose(a.u_hat, b.u_hat, atol=1e-6)
    assert not torch.allclose(a.u_next, b.u_next, atol=1e-4)


def test_prefix_changes_outputs_unless_masked():
    seq, n = [[11, 12, 13, -1, -1]], [3]
    for mask_prefix in (False, True):
        model = _model(mask_prefix=mask_prefix)
        a, b = _run(model, _batch(seq, n, seed=0)), _run(model, _batch(seq, n, seed=1))
        same = torch.allclose(a.u_next, b.u_next, atol=1e-6) and torch.allclose(a.u_hat, b.u_hat, atol=1e-6)
        assert same == mask_prefix


def test_truncation_keeps_the_last_users():
    seq = torch.tensor([[1, 2, 3, 4, 5, 6, 7], [1, 2, -1, -1, -1, -1, -1], [1, 2, 3, 4, -1, -1, -1]])
    users, n = truncate_sequence(seq, torch.tensor([7, 2, 4]), 4)
    assert users.tolist() == [[4, 5, 6, 7], [1, 2, -1, -1], [1, 2, 3, 4]] and n.tolist() == [4, 2, 4]
    users, n = truncate_sequence(seq[:, :2], torch.tensor([2, 1, 0]), 3)  # shorter input is padded
    assert users.tolist() == [[1, 2, -1], [1, -1, -1], [-1, -1, -1]] and n.tolist() == [2, 1, 0]
    model = _model()  # seq_len 5: the model sees users 3..7 either way
    long = _run(model, _batch([[1, 2, 3, 4, 5, 6, 7]], [7]))
    short = _run(model, _batch([[3, 4, 5, 6, 7]], [5]))
    assert torch.allclose(long.u_next, short.u_next, atol=1e-6) and torch.allclose(long.u_hat, short.u_hat, atol=1e-6)


def test_lookalike_mode():
    model = _model(mode="lookalike")
    out = _run(model, _batch(SEQ, SEQ_LEN))
    assert out.u_hat.shape == (3, L + 1, 8) and torch.count_nonzero(out.u_hat) == 0
    assert torch.allclose(out.u_next.norm(dim=-1), torch.ones(3), atol=1e-5)
    perm = _run(model, _batch([[15, 14, 13, 12, 11], [22, 21, 5, 5, 5], [1, 1, 1, 1, 1]], SEQ_LEN))
    assert torch.allclose(out.u_next, perm.u_next, atol=1e-6)  # sum pooling: order and padding free
    assert not any(isinstance(m, torch.nn.TransformerEncoder) for m in model.modules())


def test_unknown_mode_rejected():
    with pytest.raises(ValueError):
        NextUserConfig(mode="gpt")


def test_user_embedding_is_a_collaborator():
    emb = torch.nn.Embedding(100, 8)
    model = NextUserModel(_cfg(), user_emb=emb)
    assert model.user_emb is emb
    out = model(_batch([[1, 2, -1, -1, -1]], [2]))
    out.u_next.sum().backward()
    assert emb.weight.grad is not None and emb.weight.grad[1].abs().sum() > 0


def test_default_config_runs():
    cfg = NextUserConfig()
    assert (cfg.dim, cfg.heads, cfg.layers, cfg.ff, cfg.dropout, cfg.seq_len, cfg.n_prefix) == (32, 2, 2, 64, 0.0, 50, 4)
    torch.manual_seed(0)
    b = {"item_id": torch.tensor([1]), "category": torch.tensor([2]), "creator_id": torch.tensor([3]),
         "item_dense": torch.rand(1, 1), "seq_users": torch.arange(60)[None], "seq_len": torch.tensor([60])}
    out = _run(NextUserModel(cfg).eval(), b)
    assert out.u_hat.shape == (1, 51, 32) and out.u_next.shape == (1, 32)


def test_docs_snippets_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), {"__name__": "docs_example"})


def test_outputs_do_not_depend_on_the_batch_padding_length():
    """The model pads only to the batch's longest sequence; a row's outputs must not change with it."""
    torch.manual_seed(0)
    cfg = NextUserConfig(dim=8, heads=2, layers=1, ff=16, seq_len=6, n_item_dense=1)
    model = NextUserModel(cfg).eval()
    short = {"item_id": torch.tensor([3]), "category": torch.tensor([1]), "creator_id": torch.tensor([2]),
             "item_dense": torch.zeros(1, 1), "seq_users": torch.tensor([[5, 9, -1, -1, -1, -1]]),
             "seq_len": torch.tensor([2])}
    long_row = {"item_id": torch.tensor([4]), "category": torch.tensor([0]), "creator_id": torch.tensor([1]),
                "item_dense": torch.ones(1, 1), "seq_users": torch.tensor([[1, 2, 3, 4, 5, 6]]),
                "seq_len": torch.tensor([6])}
    both = {k: torch.cat([short[k], long_row[k]]) for k in short}
    with torch.no_grad():
        alone, mixed = model(short), model(both)
    assert model.visible_sequence(short)[0].shape[1] == 2 and model.visible_sequence(both)[0].shape[1] == 6
    assert torch.allclose(alone.u_next[0], mixed.u_next[0], atol=1e-5)
    assert torch.allclose(alone.u_hat[0, :3], mixed.u_hat[0, :3], atol=1e-5)
