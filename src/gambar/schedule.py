"""Discrete VP noise schedules: x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps for t = 0..T-1."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gambar.errors import CorruptFileError, InvalidInputError, shown

# Nichol & Dhariwal 2021 (eq. 17): betas capped below 1 so the last step keeps some signal.
# The same cap as diffusers' "squaredcos_cap_v2", so the two schedules agree to float precision.
COSINE_MAX_BETA = 0.999
COSINE_OFFSET = 0.008  # the small s of eq. 17: keeps beta_0 from being vanishingly small
# Far beyond any schedule in use (1000); schedules read from files are held to it.
MAX_TIMESTEPS = 100_000


@dataclass(frozen=True, eq=False)  # eq=False: a tensor field has no truth value for ==
class NoiseSchedule:
    """Signal levels ab_t (T,) float64 of a variance-preserving diffusion (Ho et al. 2020)."""

    alphas_cumprod: torch.Tensor
    kind: str = "custom"
    # Constructor keyword arguments that rebuild this schedule (kept for to_json).
    params: tuple[tuple[str, float | int], ...] = field(default=())

    def __post_init__(self) -> None:
        ab = torch.as_tensor(self.alphas_cumprod, dtype=torch.float64).detach().cpu()
        if ab.ndim != 1 or ab.numel() < 2:
            raise ValueError(f"alphas_cumprod must be 1-D with T >= 2, got shape {tuple(ab.shape)}")
        if not bool(((ab > 0) & (ab < 1)).all()) or not bool((ab[1:] < ab[:-1]).all()):
            raise ValueError("alphas_cumprod must lie in (0, 1) and strictly decrease with t")
        object.__setattr__(self, "alphas_cumprod", ab)

    # ---- constructors ------------------------------------------------------------------------

    @classmethod
    def cosine(cls, T: int = 1000, shift: float = 1.0) -> NoiseSchedule:
        """Cosine schedule (Nichol & Dhariwal 2021), optionally log-SNR shifted (Hoogeboom et al.
        2023): logSNR'(t) = logSNR(t) - 2 log(shift), so shift > 1 is noisier at every t (use
        shift = resolution / base resolution when training at a higher resolution)."""
        if T < 2 or shift <= 0:
            raise ValueError(f"cosine schedule needs T >= 2 and shift > 0, got {T=}, {shift=}")

        def abar(u: float) -> float:
            return math.cos((u + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

        # Exactly diffusers' betas_for_alpha_bar: per-step betas from ratios of abar, then capped.
        betas = [min(1 - abar((i + 1) / T) / abar(i / T), COSINE_MAX_BETA) for i in range(T)]
        ab = torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), dim=0)
        if shift != 1.0:
            # Shift after the cap so that shift=1 reproduces diffusers bit for bit.
            ab = torch.sigmoid(torch.logit(ab) - 2 * math.log(shift))
        return cls(ab, "cosine", (("T", T), ("shift", float(shift))))

    @classmethod
    def linear(
        cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> NoiseSchedule:
        """Linear betas (Ho et al. 2020), diffusers' "linear" beta_schedule."""
        if T < 2 or not 0 < beta_start < beta_end < 1:
            raise ValueError("linear schedule needs T >= 2 and 0 < beta_start < beta_end < 1")
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        ab = torch.cumprod(1 - betas, dim=0)
        return cls(ab, "linear", (("T", T), ("beta_start", beta_start), ("beta_end", beta_end)))

    # ---- serialisation -----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A JSON-able description {"kind": ..., params...} for a saved model's config.json."""
        if self.kind == "custom":
            return {"kind": "custom", "alphas_cumprod": self.alphas_cumprod.tolist()}
        return {"kind": self.kind, **dict(self.params)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> NoiseSchedule:
        """Inverse of to_json; also accepts the JSON text itself. Anything else (it comes from a
        file) is a one-line CorruptFileError."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except (ValueError, RecursionError) as err:
                raise CorruptFileError(f"bad noise schedule: not JSON ({err})") from None
        if not isinstance(data, dict):
            raise CorruptFileError(
                f"bad noise schedule {shown(data)}: expected a JSON object")
        params = dict(data)
        kind = params.pop("kind", None)
        # The constructors loop over T in Python: a forged T of 1e12 would never return.
        values = params.get("alphas_cumprod")
        length = len(values) if isinstance(values, list) else params.get("T", 0)
        quoted = shown(data)  # a custom schedule holds T numbers: show a few
        if not isinstance(length, int) or length > MAX_TIMESTEPS:
            raise CorruptFileError(
                f"bad noise schedule {quoted}: T must be an integer of at most {MAX_TIMESTEPS}")
        try:
            if kind == "custom":
                return cls(torch.tensor(params["alphas_cumprod"], dtype=torch.float64))
            if kind == "cosine":
                return cls.cosine(**params)
            if kind == "linear":
                return cls.linear(**params)
        except (TypeError, KeyError, ValueError, RuntimeError, OverflowError) as err:
            raise CorruptFileError(f"bad noise schedule {quoted}: {err}") from None
        raise CorruptFileError(
            f"unknown noise schedule kind {kind!r}; expected cosine, linear or custom"
        )

    # ---- properties --------------------------------------------------------------------------

    @property
    def num_timesteps(self) -> int:
        """T, the number of training timesteps."""
        return self.alphas_cumprod.shape[0]

    @property
    def betas(self) -> torch.Tensor:
        """Per-step betas (T,) float64, e.g. for diffusers' `trained_betas`."""
        ab = self.alphas_cumprod
        return 1 - torch.cat([ab[:1], ab[1:] / ab[:-1]])

    @property
    def log_snr(self) -> torch.Tensor:
        """log(ab / (1 - ab)) per timestep (T,) float64 (Kingma et al. 2021)."""
        return torch.logit(self.alphas_cumprod)

    def timesteps(self, steps: int) -> torch.LongTensor:
        """`steps` descending timesteps with "trailing" spacing (Lin et al. 2024, table 2): starts
        at T-1 so sampling begins from (almost) pure noise; identical to diffusers'."""
        T = self.num_timesteps
        if not 1 <= steps <= T:
            raise InvalidInputError(f"steps must be between 1 and {T}, got {steps}")
        # diffusers' formula. Float round-off makes arange return steps+1 entries for some counts
        # (e.g. 61 or 103 of 1000), the extra one being -1; keep the first `steps`.
        ts = np.round(np.arange(T, 0, -T / steps)).astype(np.int64)[:steps] - 1
        return torch.from_numpy(ts)  # type: ignore[return-value]

    # ---- the forward process and parametrisation conversions ---------------------------------

    def alpha_sigma(
        self, t: torch.Tensor | int, like: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(ab_t), sqrt(1 - ab_t)) for t: (B,) or scalar, shaped (B, 1, ..., 1) to broadcast
        against `like` (B, ...) in its dtype and device; without `like`, against images
        (B, 1, 1, 1) in the default dtype on t's device. A scalar t gives 0-dim tensors."""
        t = torch.as_tensor(t)
        if like is None:
            ndim, dtype, device = 4, torch.get_default_dtype(), t.device
        else:
            ndim, dtype, device = like.ndim, like.dtype, like.device
        ab = self.alphas_cumprod[t.long().cpu()]
        # Never float64 out: it would silently promote float32 data. Cast on the CPU first,
        # as some devices (MPS) have no float64.
        alpha = ab.sqrt().to(dtype).to(device)
        sigma = (1 - ab).sqrt().to(dtype).to(device)
        if alpha.ndim:
            shape = (-1,) + (1,) * (ndim - 1)
            alpha, sigma = alpha.reshape(shape), sigma.reshape(shape)
        return alpha, sigma

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = alpha x0 + sigma eps (Ho et al. 2020, eq. 4); x0, noise: (B, ...), t: (B,)."""
        alpha, sigma = self.alpha_sigma(t, x0)
        return alpha * x0 + sigma * noise

    def v_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v = alpha eps - sigma x0 (Salimans & Ho 2022, sec. 4)."""
        alpha, sigma = self.alpha_sigma(t, x0)
        return alpha * noise - sigma * x0

    def x0_from_v(self, x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0 = alpha x_t - sigma v: bounded error even where alpha ~ 0 (Salimans & Ho 2022)."""
        alpha, sigma = self.alpha_sigma(t, x_t)
        return alpha * x_t - sigma * v

    def x0_from_eps(self, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t - sigma eps) / alpha; amplifies eps errors by sigma/alpha at high noise."""
        alpha, sigma = self.alpha_sigma(t, x_t)
        return (x_t - sigma * eps) / alpha

    def eps_from_x0(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps = (x_t - alpha x0) / sigma."""
        alpha, sigma = self.alpha_sigma(t, x_t)
        return (x_t - alpha * x0) / sigma
