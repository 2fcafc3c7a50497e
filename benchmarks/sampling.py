"""Seconds per 64x64 image: gambar's pipeline vs a diffusers equivalent, and share of peak.

Prints one JSON object. In one run it measures
- the machine's peak: best of a large fp32/bf16 matmul and a 3x3 convolution (GFLOP/s);
- gambar: `gambar.load(model).generate` at batch 1 with the model's default sampler settings,
  in fp32 and with `precision="bf16"` (autocast);
- diffusers: a UNet2DConditionModel of about the same size and levels (64 px, 3 levels, cross
  attention to 384-d text states) driven by DPMSolverMultistepScheduler for the same number of
  steps with classifier-free guidance — the closest diffusers equivalent of the same network;
- the fraction of peak each reaches (FLOPs counted with torch.utils.flop_counter).
Absolute times on a shared machine are noisy: compare the ratio.

    python benchmarks/sampling.py --model default --repeats 5
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import gambar


def best_time(fn, repeats: int) -> float:
    """Fastest of `repeats` runs after one warm-up (the least disturbed by other load)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_gflops(repeats: int) -> dict[str, float]:
    """Best GFLOP/s of a 2048^2 matmul and a 3x3 conv, in fp32 and bf16."""
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(2048, 2048, dtype=dtype)
        t = best_time(lambda a=a: a @ a, repeats)
        out[f"matmul_{str(dtype)[6:]}"] = 2 * 2048**3 / t / 1e9
        x = torch.randn(8, 128, 32, 32, dtype=dtype)
        conv = torch.nn.Conv2d(128, 128, 3, padding=1).to(dtype)
        with torch.no_grad():
            t = best_time(lambda x=x, conv=conv: conv(x), repeats)
        out[f"conv3x3_{str(dtype)[6:]}"] = 2 * 8 * 128 * 128 * 9 * 32 * 32 / t / 1e9
    return {k: round(v, 1) for k, v in out.items()}


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def diffusers_sampler(steps: int, guidance: float):
    """A diffusers UNet of gambar's default size + DPM-Solver++ with CFG, one image per call."""
    from diffusers import DPMSolverMultistepScheduler, UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=64, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(48, 96, 144), cross_attention_dim=384, attention_head_dim=8,
        norm_num_groups=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    ).eval()
    sched = DPMSolverMultistepScheduler(beta_schedule="squaredcos_cap_v2",
                                        prediction_type="v_prediction",
                                        timestep_spacing="trailing")
    text = torch.randn(2, 12, 384)

    @torch.no_grad()
    def run() -> None:
        sched.set_timesteps(steps)
        x = torch.randn(1, 3, 64, 64)
        for t in sched.timesteps:
            out = unet(torch.cat([x, x]), t, encoder_hidden_states=text).sample
            c, u = out.chunk(2)
            x = sched.step(u + guidance * (c - u), t, x).prev_sample

    params = sum(p.numel() for p in unet.parameters())
    return run, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    peak = peak_gflops(args.repeats)
    pipe = gambar.load(args.model)
    steps, guidance = pipe.default_options.steps, pipe.default_options.guidance

    def ours() -> None:
        pipe.generate(["a red circle above a blue square"], seeds=[0], progress=False)

    def ours_bf16() -> None:
        pipe.generate(["a red circle above a blue square"], seeds=[0], precision="bf16",
                      progress=False)

    ours_s = best_time(ours, args.repeats)
    ours_flops = count_flops(ours)
    bf16_s = best_time(ours_bf16, args.repeats)
    theirs, their_params = diffusers_sampler(steps, guidance)
    theirs_s = best_time(theirs, args.repeats)
    theirs_flops = count_flops(theirs)
    best_peak = max(peak.values())
    print(json.dumps({
        "model": pipe.name, "sampler": pipe.default_options.sampler, "steps": steps,
        "guidance": guidance, "size": pipe.default_options.size, "threads": args.threads,
        "peak_gflops": peak,
        "gambar": {"seconds_per_image": round(ours_s, 3),
                   "params": sum(p.numel() for p in pipe.model.parameters()),
                   "gflop_per_image": round(ours_flops / 1e9, 2),
                   "fraction_of_peak": round(ours_flops / ours_s / 1e9 / best_peak, 3),
                   "bf16_seconds_per_image": round(bf16_s, 3),
                   "bf16_fraction_of_peak": round(ours_flops / bf16_s / 1e9 / best_peak, 3)},
        "diffusers": {"seconds_per_image": round(theirs_s, 3), "params": their_params,
                      "gflop_per_image": round(theirs_flops / 1e9, 2),
                      "fraction_of_peak": round(theirs_flops / theirs_s / 1e9 / best_peak, 3)},
        "speed_ratio_diffusers_over_gambar": round(theirs_s / ours_s, 2),
        "speed_ratio_diffusers_over_gambar_bf16": round(theirs_s / bf16_s, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
