"""Detail monitor: PSNR of one-step denoise reconstructions of fixed latents, over training.

A diffusion model whose noising, target or scaling code is subtly wrong still lowers its
loss, but it reconstructs less and less detail. Noising a fixed set of latents with fixed
noise at fixed timesteps, predicting x0 in one step and decoding it shows that as a
falling PSNR curve long before samples look wrong. The samples are the first few of the
training data without augmentation; the reference is the VAE's decode of the clean
latents, so the VAE's own reconstruction error does not count.
"""

from __future__ import annotations

import torch

from trainer.objective import cond_kwargs, predict_x0, psnr


class DetailMonitor:
    def __init__(self, comps, samples: list[tuple], timesteps, seed: int = 0):
        """``samples`` holds ``(latents, conditioning, gligen_or_None)``, one image each."""
        from trainer.model import from_latents

        self.comps = comps
        self.timesteps = [int(t) for t in timesteps]
        self.samples = samples
        g = torch.Generator("cpu").manual_seed(seed)
        self.noise = [
            torch.randn(z.shape, generator=g).to(z.device, z.dtype) for z, _, _ in samples
        ]
        with torch.no_grad():
            self.reference = [from_latents(comps, z).clamp(-1, 1).float() for z, _, _ in samples]

    @torch.no_grad()
    def __call__(self, unet) -> dict:
        from trainer.model import from_latents

        sched = self.comps.scheduler
        by_t = {t: [] for t in self.timesteps}
        for (z, cap, gligen), noise, ref in zip(self.samples, self.noise, self.reference):
            for t in self.timesteps:
                ts = torch.full((z.shape[0],), t, device=z.device, dtype=torch.long)
                noisy = sched.add_noise(z, noise, ts)
                kwargs = {"gligen": dict(gligen)} if gligen is not None else None
                pred = unet(noisy, ts, **cond_kwargs(cap), cross_attention_kwargs=kwargs).sample
                x0 = from_latents(self.comps, predict_x0(sched, noisy, pred, ts).to(z.dtype))
                by_t[t].append(psnr(x0.clamp(-1, 1), ref).mean().item())
        out = {f"detail/psnr_t{t}": sum(v) / len(v) for t, v in by_t.items()}
        out["detail/psnr"] = sum(out.values()) / len(out)
        return out
