"""FID/KID, CLIP score, R-precision and diversity on tiny cases with known answers."""

import io
import zlib

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image, ImageFilter
from torch import nn

from gambar.contrastive import PRESETS, ContrastiveModel, ContrastiveNet
from gambar.contrastive.model import ImageTower
from gambar.contrastive.task import scene_key
from gambar.data.prompts import parse_prompt
from gambar.data.shapes import fixed_split
from gambar.errors import InvalidInputError
from gambar.evaluation.clip_score import (
    CLIPSCORE_WEIGHT,
    clip_scores,
    describes,
    name_r_precision,
    r_precision_hits,
    retrieval_top1,
)
from gambar.evaluation.diversity import (
    N_CLASSES,
    class_entropy,
    pairwise_cosine_distance,
    pairwise_pixel_distance,
    per_prompt_spread,
)
from gambar.evaluation.fid import feature_extractor, fid_kid, to_uint8
from gambar.text.setup import TextSetup

# ---------------------------------------------------------------------------------------------
# FID and KID


class Identity(nn.Module):
    """Feature "extractor" for tests: the inputs are already features (B, D)."""

    def __init__(self, dim):
        super().__init__()
        self.num_features = dim

    def forward(self, x):
        return x.double()


def frechet_reference(a, b):
    """Heusel et al. 2017 eq. 6 with scipy's matrix square root."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (400, 6))
    b = rng.normal(0.5, 1.5, (300, 6)) @ rng.normal(0, 0.6, (6, 6))
    got = fid_kid(torch.tensor(a), torch.tensor(b), Identity(6), kid=False)["fid"]
    assert got == pytest.approx(frechet_reference(a, b), rel=1e-4)


def test_fid_of_a_set_with_itself_is_zero():
    a = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    # Zero up to rounding: the matrix square root's last bits depend on the BLAS threads (an
    # exact == 0.0 failed once as 1.8e-15 under two xdist workers).
    assert fid_kid(a, a, Identity(4))["fid"] == pytest.approx(0.0, abs=1e-9)


def test_kid_is_near_zero_for_one_distribution_and_deterministic():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g)
    same = fid_kid(a, b, Identity(8), seed=3)
    shifted = fid_kid(a, b + 1.0, Identity(8), seed=3)
    assert abs(same["kid_mean"]) < 0.05 < shifted["kid_mean"]
    assert fid_kid(a, b + 1.0, Identity(8), seed=3) == shifted
    assert fid_kid(a, b + 1.0, Identity(8), seed=4)["kid_mean"] != shifted["kid_mean"]
    assert shifted["kid_subset_size"] == 150 and shifted["kid_std"] > 0


def test_kid_leaves_the_global_rng_alone():
    a = torch.randn(40, 3)
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    fid_kid(a, a + 1, Identity(3), seed=9)
    assert torch.rand(1) == expected


def blur(images, radius):
    return [im.filter(ImageFilter.GaussianBlur(radius)) if radius else im for im in images]


def noise(images, sigma, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for im in images:
        a = np.asarray(im, dtype=np.float64) + rng.normal(0, sigma, (*im.size[::-1], 3))
        out.append(Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8)))
    return out


@pytest.fixture(scope="module")
def splits():
    return ([s.image for s in fixed_split("train", 96, 32)],
            [s.image for s in fixed_split("test", 96, 32)])


@pytest.fixture(scope="module")
def random_features():
    """A randomly initialised image tower: untrained features already order damage."""
    torch.manual_seed(0)
    return feature_extractor(ImageTower(PRESETS["clip-tiny"]))


@pytest.mark.parametrize("damage,levels", [(blur, [0, 0.5, 1, 2, 3]),
                                           (noise, [0, 8, 16, 32, 64])],
                         ids=["blur", "noise"])
def test_fid_grows_monotonically_with_damage(splits, random_features, damage, levels):
    train, _ = splits
    fids = [fid_kid(train, damage(train, level), random_features, kid=False)["fid"]
            for level in levels]
    print(damage.__name__, dict(zip(levels, [round(f, 3) for f in fids], strict=True)))
    assert fids[0] < 1e-6  # the same images
    assert all(b > a for a, b in zip(fids, fids[1:], strict=False)), fids


@pytest.mark.parametrize("damage,levels", [(blur, [1, 2, 3]), (noise, [16, 32, 64])],
                         ids=["blur", "noise"])
def test_fid_train_vs_test_is_below_any_damage(splits, random_features, damage, levels):
    """Two samples of one distribution (train and test splits) are closer than train is to the
    test images damaged at any level, and the gap grows with the damage. (At 96 images the
    train-test figure is mostly small-sample bias, ~d/N: it halves when N doubles.)"""
    train, test = splits
    between = fid_kid(train, test, random_features)
    fids = [fid_kid(train, damage(test, level), random_features, kid=False)["fid"]
            for level in levels]
    print("train-test", round(between["fid"], 3), damage.__name__, [round(f, 3) for f in fids])
    assert all(b > a for a, b in zip([between["fid"], *fids], fids, strict=False)), fids
    heavy = fid_kid(train, damage(test, levels[-1]), random_features)
    assert between["kid_mean"] < heavy["kid_mean"]


def test_extractor_reads_uint8_and_unit_floats_alike(splits, random_features):
    images = to_uint8(splits[0][:4])
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 32, 32)
    torch.testing.assert_close(random_features(images), random_features(images / 255.0))
    random_features.train()
    assert not random_features.tower.training


def test_to_uint8_keeps_pixels():
    im = Image.fromarray(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3))
    assert to_uint8([im])[0].permute(1, 2, 0).numpy().tolist() == np.asarray(im).tolist()


# ---------------------------------------------------------------------------------------------
# Which captions describe an image


@pytest.mark.parametrize("caption,image,expected", [
    ("a red circle", "a large red circle", True),  # a looser caption is still true
    ("a large red circle", "a red circle", False),  # unsized prompts are drawn medium
    ("a small red circle", "a small red circle", True),
    ("a red circle", "a blue circle", False),
    ("two red circles", "three red circles", False),
    ("a red circle and a blue square", "a blue square and a red circle", True),
    ("a red circle left of a blue square", "a blue square to the right of a red circle", True),
    ("a red circle right of a blue square", "a red circle left of a blue square", False),
    ("a red circle above a blue square", "a red circle left of a blue square", False),
    # where the image's layout is unknown, a stated relation might hold: never a distractor
    ("a red circle left of a blue square", "a red circle and a blue square", True),
    ("a red circle and a blue square", "a red circle left of a blue square", True),
])
def test_describes(caption, image, expected):
    assert describes(parse_prompt(caption), parse_prompt(image)) is expected


# ---------------------------------------------------------------------------------------------
# CLIP score and R-precision


class KeyModel:
    """A perfect (or perfectly wrong) contrastive model: embeddings are random unit vectors of
    the scene key, so a caption matches exactly the images of its labels."""

    def __init__(self, image_keys, sign=1.0, dim=512):
        self.image_keys, self.sign, self.dim = list(image_keys), sign, dim

    def _vec(self, key):
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        return nn.functional.normalize(torch.randn(self.dim, generator=g), dim=0)

    def embed_images(self, images):
        assert len(images) == len(self.image_keys)
        return self.sign * torch.stack([self._vec(k) for k in self.image_keys])

    def embed_texts(self, texts):
        return torch.stack([self._vec(scene_key(parse_prompt(t))) for t in texts])

    def similarity(self, images, texts):
        return self.embed_images(images) @ self.embed_texts(texts).T


PROMPTS = ["a red circle", "tiga bintang biru", "a green square to the left of a purple heart",
           "a small yellow diamond", "hati merah muda dan segitiga hitam"]
LANGS = ["en", "id", "en", "en", "id"]


@pytest.mark.parametrize("sign,expected", [(1.0, 1.0), (-1.0, 0.0)])
def test_r_precision_of_oracle_and_anti_oracle(sign, expected):
    scenes = [parse_prompt(p) for p in PROMPTS]
    model = KeyModel([scene_key(s) for s in scenes], sign)
    images = [Image.new("RGB", (8, 8))] * len(PROMPTS)
    hits = r_precision_hits(model, images, PROMPTS, scenes, LANGS, seed=0)
    assert np.mean(hits) == expected


def test_r_precision_distractors_never_describe_the_image():
    """An oracle that rates every true description equally would tie with a distractor that
    describes the image; none does, so even loose true captions win."""
    scenes = [parse_prompt("a large red circle")]
    loose = KeyModel([scene_key(parse_prompt("a red circle"))])
    hits = r_precision_hits(loose, [Image.new("RGB", (8, 8))], ["a red circle"], scenes, ["en"])
    assert hits == [True]


class NameModel(KeyModel):
    """Embeds a text by its own words and an image by the name it was drawn from."""

    def embed_texts(self, texts):
        return torch.stack([self._vec(t) for t in texts])


def test_name_r_precision_oracle_chance_and_groups():
    names = [f"thing {k}" for k in range(120)]
    groups = [f"g{k}" for k in range(120)]
    images = [Image.new("RGB", (8, 8))] * 5
    assert name_r_precision(NameModel(names[:5]), images, names[:5], groups[:5],
                            distractors=3) == [True] * 5
    # the oracle ranks each image's own name first among 99 drawn from the other 119
    all_images = [Image.new("RGB", (8, 8))] * 120
    assert all(name_r_precision(NameModel(names), all_images, names, groups))
    assert not any(name_r_precision(NameModel(names, sign=-1.0), all_images, names, groups))
    # images shown with a wrong name score ~chance: 1 in 100
    shuffled = names[1:] + names[:1]
    assert np.mean(name_r_precision(NameModel(shuffled), all_images, names, groups)) < 0.1
    # a variant of the same group is never a distractor, even under another name
    same = ["thumbs up", "thumbs up: dark skin tone"] + names[:100]
    grp = ["1F44D", "1F44D"] + groups[:100]
    hits = name_r_precision(NameModel(["thumbs up: dark skin tone"] * 2 + names[:100]),
                            [Image.new("RGB", (8, 8))] * 102, same, grp)
    # image 1 wins: its same-group twin name is no distractor; image 0 shows the other variant
    assert hits[1] and not hits[0]
    with pytest.raises(InvalidInputError, match="distractor"):
        name_r_precision(NameModel(names[:5]), images, names[:5], groups[:5])


def tiny_clip():
    torch.manual_seed(0)
    text = TextSetup.build("small", PROMPTS, dim=32, depth=1, heads=2, vocab_size=100)
    return ContrastiveModel(ContrastiveNet(PRESETS["clip-tiny"], text.dim, text.trainable), text)


def test_clip_score_is_hessels_formula():
    model = tiny_clip()
    images = [s.image for s in fixed_split("val", 5, 32)]
    cos = (model.embed_images(images) * model.embed_texts(PROMPTS)).sum(-1).double().numpy()
    expected = CLIPSCORE_WEIGHT * np.maximum(cos, 0)
    np.testing.assert_allclose(clip_scores(model, images, PROMPTS), expected, rtol=1e-6)


def test_r_precision_with_a_real_model_depends_on_the_seed_only():
    """Same seed: the same hits from a freshly built model and pools (suite reports repeat);
    other seeds draw other distractors, so an untrained model's hits change with the seed (5
    distractors, not 99: against 99 an untrained model misses whatever the seed)."""
    images = [s.image for s in fixed_split("val", 5, 32)]
    scenes = [parse_prompt(p) for p in PROMPTS]
    model = tiny_clip()
    by_seed = [r_precision_hits(model, images, PROMPTS, scenes, LANGS, seed=s, distractors=5)
               for s in range(8)]
    again = r_precision_hits(tiny_clip(), images, PROMPTS, scenes, LANGS, seed=1, distractors=5)
    assert again == by_seed[1]
    assert len({tuple(h) for h in by_seed}) > 1  # a seed that were ignored would give one set


def test_retrieval_counts_same_label_items_as_hits():
    keys = ["a", "a", "b"]
    model = KeyModel(["a", "a", "b"])
    model.embed_texts = lambda texts: torch.stack([model._vec(k) for k in keys])
    images = [Image.new("RGB", (8, 8))] * 3
    assert retrieval_top1(model, images, ["x", "y", "z"], keys) == {
        "image_to_text": 1.0, "text_to_image": 1.0}


# ---------------------------------------------------------------------------------------------
# Diversity


def test_collapsed_seeds_have_zero_spread():
    im = fixed_split("val", 1, 32)[0].image
    assert pairwise_pixel_distance([im, im.copy(), im.copy()]) == 0.0
    f = torch.randn(1, 16).repeat(4, 1)
    assert pairwise_cosine_distance(f) == pytest.approx(0.0, abs=1e-12)


def test_spread_known_values():
    black, white = Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4), (255, 255, 255))
    assert pairwise_pixel_distance([black, white]) == pytest.approx(1.0)
    assert pairwise_pixel_distance([black, black, white]) == pytest.approx(2 / 3)
    orthogonal = torch.eye(3)
    assert pairwise_cosine_distance(orthogonal) == pytest.approx(1.0)
    spread = per_prompt_spread({"p": [black, white], "q": [black, black], "r": [black]},
                               pairwise_pixel_distance)
    assert spread["mean"] == pytest.approx(0.5) and spread["min"] == 0.0
    assert set(spread["per_prompt"]) == {"p", "q"}  # one image has no spread


def test_class_entropy_known_values():
    assert class_entropy([["red circle"]] * 5)["score"] == pytest.approx(1.0)
    uniform = class_entropy([["red circle"], ["blue star"], ["green heart"], ["pink square"]])
    assert uniform["score"] == pytest.approx(4.0) and uniform["entropy"] == pytest.approx(
        np.log(4))
    # every image shows the same two classes: high entropy of y, but no information per image
    mixed = class_entropy([["red circle", "blue star"]] * 3)
    assert mixed["score"] == pytest.approx(1.0) and mixed["conditional_entropy"] == pytest.approx(
        np.log(2))
    empty = class_entropy([[], ["red circle"]])
    assert empty["classes_seen"] == 2 and empty["classes_possible"] == N_CLASSES


def test_png_round_trip_keeps_pixel_distance():
    """The report stores PNGs: lossless, so figures recomputed from files would agree."""
    im = fixed_split("val", 1, 32)[0].image
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    assert pairwise_pixel_distance([im, Image.open(io.BytesIO(buf.getvalue()))]) == 0.0
