"""A small CLIP-like model (Radford et al. 2021): image tower + text tower, symmetric InfoNCE.

Trained on gambar's own data, it is the evaluator's eye: its image features replace Inception's in
FID/KID (whose weights cannot be downloaded here), and its joint embedding gives CLIP score and
R-precision. It is deliberately small: a conv net for 64 px images and either the trainable small
text transformer (`text/small.py`) or the frozen MiniLM with a trainable head.

Saved like every gambar model (gambar.model_dir): config.json (format gambar/1, family
"contrastive"), one component, "model" (model.safetensors), + tokenizer.json for a trainable text
encoder, and SHA256SUMS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import gambar
from gambar.config import check_range, dataclass_from_dict
from gambar.data.loading import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from gambar.errors import InvalidInputError
from gambar.model_dir import (
    FORMAT,
    MAIN,
    config_error,
    load_components,
    open_model_dir,
    read_config,
    resolve_model,
    save_model_dir,
)
from gambar.nn.norms import group_norm
from gambar.tensors import to_tensor
from gambar.text.base import Encoded, masked_mean
from gambar.text.setup import TextSetup
from gambar.text.small import Block

FAMILY = "contrastive"
ENCODE_BATCH = 64  # images or captions per forward pass when encoding lists
MAX_STAGES = 6  # one halving each: 512 px -> 8 px
MAX_WIDTH = 1024  # channels of a stage, image feature width, joint embedding width
MAX_FEATURES = 65_536  # the flattened last feature map; the fc layer is this x width
MAX_TEXT_HEAD_DEPTH = 4  # blocks over the text states, as wide as the encoder (the presets: 0)
MAX_HEADS = 64


@dataclass(frozen=True)
class ContrastiveConfig:
    """Hyperparameters of the two towers and the contrastive loss."""

    image_size: int = 64  # the image tower's input side; other sizes are resized to it
    channels: tuple[int, ...] = (32, 64, 128, 128)  # one stage each, each halving the side
    width: int = 256  # image feature width: what FID/KID and diversity measure
    embed_dim: int = 128  # the joint embedding both towers project into
    text_head_depth: int = 0  # transformer blocks over the text encoder's token states
    text_head_heads: int = 4
    # CLIP initialises the temperature to 0.07 and clips the logit scale at 100 (sec. 2.5) so that
    # training cannot make the softmax arbitrarily sharp.
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0

    def __post_init__(self) -> None:
        # Upper bounds far above the presets; they stop a forged config.json from allocating
        # gigabytes (a width of 10**9) before its weights are read.
        if not 1 <= len(self.channels) <= MAX_STAGES:
            raise InvalidInputError(f"channels must list 1 to {MAX_STAGES} stages, "
                                    f"not {len(self.channels)}")
        for i, ch in enumerate(self.channels):
            check_range(f"channels[{i}]", ch, 1, MAX_WIDTH)
        check_range("image_size", self.image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
        side = self.image_size >> len(self.channels)
        if side < 1 or self.image_size % (1 << len(self.channels)):
            raise InvalidInputError(
                f"image_size={self.image_size} must be divisible by 2**{len(self.channels)} "
                "(one halving per stage); use fewer stages or another size"
            )
        features = self.channels[-1] * side * side  # the flattened last map the fc layer reads
        if features > MAX_FEATURES:
            raise InvalidInputError(
                f"the last stage flattens to {self.channels[-1]} x {side} x {side} = {features} "
                f"features, over {MAX_FEATURES}; add a stage or narrow the last one")
        check_range("width", self.width, 1, MAX_WIDTH)
        check_range("embed_dim", self.embed_dim, 1, MAX_WIDTH)
        check_range("text_head_depth", self.text_head_depth, 0, MAX_TEXT_HEAD_DEPTH)
        check_range("text_head_heads", self.text_head_heads, 1, MAX_HEADS)
        if not 0 < self.init_temperature < 1 or not 1 < self.max_logit_scale < math.inf:
            raise InvalidInputError("need 0 < init_temperature < 1 and a finite "
                                    "max_logit_scale > 1")

    @property
    def final_side(self) -> int:
        """Side of the last stage's feature map."""
        return self.image_size >> len(self.channels)


PRESETS: dict[str, ContrastiveConfig] = {
    "clip-s": ContrastiveConfig(),
    "clip-tiny": ContrastiveConfig(image_size=32, channels=(16, 32), width=64, embed_dim=32),
}


# ---------------------------------------------------------------------------------------------
# Towers


class DownStage(nn.Module):
    """Strided conv then a residual conv: (B, Cin, H, W) -> (B, Cout, H/2, W/2)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1)
        self.norm1 = group_norm(out_ch)
        self.conv = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.norm2 = group_norm(out_ch)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, Cin, H, W) -> (B, Cout, H/2, W/2)."""
        h = self.act(self.norm1(self.down(x)))
        return h + self.act(self.norm2(self.conv(h)))


class ImageTower(nn.Module):
    """Conv net: images (B, 3, H, W) in [-1, 1] -> features (B, width).

    The last feature map is flattened, not average-pooled: pooling would throw away where things
    are, and the shapes prompts are about positions ("left of", "above"). CLIP's ResNets keep
    position through an attention pool with positional embeddings; a flatten is the small version.
    """

    def __init__(self, cfg: ContrastiveConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = nn.Conv2d(3, cfg.channels[0], 3, padding=1)
        ins = (cfg.channels[0], *cfg.channels[:-1])
        stages = [DownStage(i, o) for i, o in zip(ins, cfg.channels, strict=True)]
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(cfg.channels[-1] * cfg.final_side**2, cfg.width)
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) in [-1, 1], any H = W (resized to cfg.image_size) -> (B, width)."""
        s = self.cfg.image_size
        if x.shape[-2:] != (s, s):
            # antialias: a plain bilinear downscale aliases thin edges into texture
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > s)
        h = self.stages(self.stem(x))  # (B, C, s', s')
        return self.norm(self.fc(h.flatten(1)))


class ContrastiveNet(nn.Module):
    """Everything that trains: image tower, text head and projections, the logit scale, and the
    small text encoder when it is trainable (a frozen one is passed in at call time)."""

    def __init__(self, cfg: ContrastiveConfig, text_dim: int, text: nn.Module | None = None
                 ) -> None:
        super().__init__()
        self.cfg = cfg
        self.image = ImageTower(cfg)
        self.image_proj = nn.Linear(cfg.width, cfg.embed_dim, bias=False)
        self.text = text
        if text_dim % cfg.text_head_heads and cfg.text_head_depth:
            raise InvalidInputError(
                f"text width {text_dim} is not divisible by text_head_heads={cfg.text_head_heads}")
        self.text_head = nn.ModuleList(
            Block(text_dim, cfg.text_head_heads, 0.0) for _ in range(cfg.text_head_depth))
        self.text_norm = nn.LayerNorm(text_dim)
        self.text_proj = nn.Linear(text_dim, cfg.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> unit embeddings (B, E)."""
        return F.normalize(self.image_proj(self.image(images)), dim=-1)

    def embed_texts(self, cond: Encoded | Sequence[str]) -> torch.Tensor:
        """Encoded prompts (or raw prompts for the trainable encoder) -> unit embeddings (B, E)."""
        if not isinstance(cond, Encoded):
            if self.text is None:
                raise ValueError("this model's text encoder is frozen; pass Encoded prompts")
            cond = self.text(list(cond))
        assert isinstance(cond, Encoded)
        states = cond.states  # (B, L, D)
        for block in self.text_head:
            states = block(states, cond.mask)
        pooled = masked_mean(self.text_norm(states), cond.mask)  # (B, D)
        return F.normalize(self.text_proj(pooled), dim=-1)

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clipped at cfg.max_logit_scale (CLIP sec. 2.5)."""
        return self.logit_scale.exp().clamp(max=self.cfg.max_logit_scale)

    def forward(self, images: torch.Tensor, cond: Encoded | Sequence[str]) -> torch.Tensor:
        """Logits (B_img, B_txt) = scale * cosine similarity; images (B, 3, H, W) in [-1, 1]."""
        return self.scale() * self.embed_images(images) @ self.embed_texts(cond).T


def contrastive_loss(logits: torch.Tensor, keys: Sequence[str] | None = None) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP, Radford et al. 2021, fig. 3; van den Oord et al. 2018).

    logits: (B, B), row i = image i against every caption. `keys` (B,) name what each pair shows;
    pairs with equal keys are all counted as positives (soft targets spread evenly over them).
    On shapes a batch often holds two "a red circle"s, and calling the other one a negative would
    teach the model to tell apart images that no caption distinguishes.
    """
    b = logits.shape[0]
    if logits.shape != (b, b):
        raise ValueError(f"logits must be square, got {tuple(logits.shape)}")
    if keys is None:
        target = torch.eye(b, dtype=logits.dtype, device=logits.device)
    else:
        codes = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        ids = torch.tensor([codes[k] for k in keys], device=logits.device)
        target = (ids[:, None] == ids[None, :]).to(logits.dtype)
    target = target / target.sum(dim=1, keepdim=True)  # symmetric, so columns are alike
    image_to_text = F.cross_entropy(logits, target)
    text_to_image = F.cross_entropy(logits.T, target)
    return (image_to_text + text_to_image) / 2


# ---------------------------------------------------------------------------------------------
# The saved model


def images_to_tensor(images: Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
    """PIL images (equal sizes) or a (B, 3, H, W) tensor in [-1, 1] -> (B, 3, H, W) float."""
    if isinstance(images, torch.Tensor):
        return images.float()
    if len(images) == 0:
        raise InvalidInputError("no images given")
    return torch.stack([to_tensor(im) for im in images])


class ContrastiveModel:
    """A loaded contrastive model: the trained net, its text encoder, and save/load.

    `gambar.load(path)` returns one for a model directory of family "contrastive".
    """

    family = FAMILY

    def __init__(self, net: ContrastiveNet, text: TextSetup, *, name: str = "unsaved",
                 sha256: str = "", extra: dict[str, Any] | None = None) -> None:
        self.net = net.eval()
        self.text = text
        self.cfg = net.cfg
        self.name = name
        self.sha256 = sha256
        self.extra = extra or {}

    # ---- encoding --------------------------------------------------------------------------
    @torch.inference_mode()
    def image_features(self, images: Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
        """Image-tower features (N, width), before projection: FID's "pool3" equivalent."""
        x = images_to_tensor(images)
        return torch.cat([self.net.image(x[i:i + ENCODE_BATCH])
                          for i in range(0, len(x), ENCODE_BATCH)])

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image.Image] | torch.Tensor) -> torch.Tensor:
        """Unit image embeddings (N, E)."""
        x = images_to_tensor(images)
        return torch.cat([self.net.embed_images(x[i:i + ENCODE_BATCH])
                          for i in range(0, len(x), ENCODE_BATCH)])

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit text embeddings (N, E)."""
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.cfg.embed_dim)
        out = []
        for i in range(0, len(texts), ENCODE_BATCH):
            chunk = texts[i:i + ENCODE_BATCH]
            cond = self.text.encode(chunk, self.net) if self.text.frozen is not None else chunk
            out.append(self.net.embed_texts(cond))
        return torch.cat(out)

    def similarity(self, images: Sequence[Image.Image] | torch.Tensor, texts: Sequence[str]
                   ) -> torch.Tensor:
        """Cosine similarity (N_images, N_texts)."""
        return self.embed_images(images) @ self.embed_texts(texts).T

    # ---- saving and loading ----------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        """config.json: format, family, every hyperparameter, the text encoder, extras."""
        return {
            "format": FORMAT,
            "family": self.family,
            "gambar_version": gambar.__version__,
            "contrastive": asdict(self.cfg),
            "text_dim": self.text.dim,
            "text_encoder": self.text.to_dict(),
            **self.extra,
        }

    def save(self, path: Path, *, dtype: torch.dtype = torch.float32) -> None:
        """Write config.json + model.safetensors (+ tokenizer.json of a trainable encoder) and
        SHA256SUMS; `dtype` is the storage type (fp16 for shipped weights; loading gives fp32)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.text.save_files(path)
        self.sha256 = save_model_dir(path, {MAIN: self.net}, self.config_dict(), dtype=dtype)
        self.name = self.extra.get("name", path.name)

    @classmethod
    def load(cls, path: Path) -> ContrastiveModel:
        """Read a model directory written by `save`, its files checked against SHA256SUMS and
        its config values for type and range (a one-line CorruptFileError naming the file)."""
        path = Path(path)
        cfg, sha256 = open_model_dir(path, family=FAMILY)
        try:
            ccfg = dataclass_from_dict(ContrastiveConfig, cfg["contrastive"],
                                       section="contrastive")
            text = TextSetup.from_dict(cfg["text_encoder"], path)
            text_dim = cfg["text_dim"]
            if type(text_dim) is not int or text_dim != text.dim:
                raise InvalidInputError(
                    f"'text_dim' must be the text encoder's width {text.dim}, not {text_dim!r}")
            if not isinstance(cfg.get("name", ""), str):
                raise InvalidInputError(f"'name' must be a string, not {cfg['name']!r}")
            net = ContrastiveNet(ccfg, text_dim, text.trainable)
        except (InvalidInputError, KeyError, TypeError) as exc:
            raise config_error(path, "contrastive model", exc) from None
        load_components(path, {MAIN: net}, config=cfg)
        extra: dict[str, Any] = {k: cfg[k] for k in ("name", "training", "data") if k in cfg}
        return cls(net, text, name=cfg.get("name", path.name), sha256=sha256, extra=extra)


def load_contrastive(name_or_path: str | Path) -> ContrastiveModel:
    """A saved contrastive model by built-in name or directory; a one-line error otherwise."""
    path = resolve_model(name_or_path)
    family = read_config(path)["family"]
    if family != FAMILY:
        raise InvalidInputError(
            f"{name_or_path} is a {family!r} model; a contrastive model is needed here "
            "(train one with: gambar train configs/contrastive.toml)")
    return ContrastiveModel.load(path)
