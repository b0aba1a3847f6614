"""Model assembly: a frozen Stable Diffusion 1.x or SDXL model plus GLIGEN's trainable adapters.

GLIGEN keeps every pretrained weight frozen and learns only the gated self-attention
layers (``fuser``) and the grounding-token network (``position_net``). Their gates start
at zero, so a freshly assembled model draws exactly what the base model draws; training
opens the gates. Everything here uses diffusers' own classes
(``UNet2DConditionModel(attention_type="gated")``, ``GatedSelfAttentionDense``,
``GLIGENTextBoundingboxProjection``) so adapters saved here load into diffusers'
``StableDiffusionGLIGENPipeline`` unchanged. SDXL's UNet is assembled the same way (its
``cross_attention_dim`` is both text encoders' widths, so ``position_net`` takes phrases
that wide: ``trainer.text``); diffusers has no SDXL GLIGEN pipeline, see ``docs/sdxl.md``.

Model folders and adapter files are user input: where a folder comes from and whether it
is whole is ``trainer.model_files``; adapters holding NaN/inf are refused here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.models.attention import GatedSelfAttentionDense
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from pipeline.core.atomic import atomic_path, atomic_write_text
from pipeline.core.errors import UserError
from trainer.arch import SD1, SDXL, SDXL_REFINER, arch_of_config
from trainer.model_files import (
    check_fit,
    check_model_folder,
    load_part,
    resolve_model,
)
from trainer.quiet import quiet_cast, quiet_libraries
from trainer.text import (  # noqa: F401 - the encoders' public home stays trainer.model
    encode_captions,
    encode_phrases,
    encode_prompts,
    null_captions,
)

ADAPTER_FORMAT = "groundset-gligen-adapters"
ADAPTER_FORMAT_VERSION = 1
GATED = "gated"


@dataclass
class Components:
    """The pieces of one diffusion model; the VAE is None for a pixel-space model.

    SDXL adds ``text_encoder_2`` (with projection: its pooled output conditions the UNet)
    and ``tokenizer_2``; SDXL's refiner has only those, so ``text_encoder`` is None there.
    ``force_zeros_for_empty_prompt`` is the folder's own word (SDXL's ``model_index.json``)
    on whether an empty caption is zeros rather than the encoding of "".
    """

    unet: UNet2DConditionModel
    vae: AutoencoderKL | None
    text_encoder: CLIPTextModel | None
    tokenizer: CLIPTokenizer | None
    scheduler: DDPMScheduler
    path: Path
    text_encoder_2: CLIPTextModelWithProjection | None = None
    tokenizer_2: CLIPTokenizer | None = None
    force_zeros_for_empty_prompt: bool = False
    arch: str = SD1  # sd1, sdxl or sdxl-refiner (trainer.arch), read from the folder

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def text_encoders(self) -> list:
        return [m for m in (self.text_encoder, self.text_encoder_2) if m is not None]

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell, computed as diffusers' pipelines do."""
        if self.vae is None:
            return 1
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        """The image side the UNet was built for."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor


# --------------------------------------------------------------------------- loading


def load_components(
    model: str | Path, *, gated: bool = True, device=None, dtype=None, seed: int | None = 0
) -> Components:
    """Load a diffusers SD 1.x or SDXL folder (or GLIGEN folder); make its UNet gated if asked.

    The family is read from the folder (``trainer.arch``): an SDXL folder brings its
    second text encoder and tokenizer, an SDXL refiner folder only those.

    The scheduler is always a ``DDPMScheduler`` built from the folder's scheduler config,
    the way diffusers' training scripts do, so training uses the model's own noise
    schedule and ``prediction_type`` whatever sampler the folder ships with. ``seed``
    makes the random initialisation of new adapter layers reproducible.
    """
    path = resolve_model(model)
    quiet_libraries()
    check_model_folder(path)
    local = {"local_files_only": True}  # a resolved folder: never a hub lookup from here
    unet = load_part(path, "unet", lambda d: UNet2DConditionModel.from_pretrained(d, **local))
    vae = None
    if (path / "vae").is_dir():
        vae = load_part(path, "vae", lambda d: AutoencoderKL.from_pretrained(d, **local))
    text = {}
    for sub, cls in (
        ("text_encoder", CLIPTextModel),
        ("tokenizer", CLIPTokenizer),
        ("text_encoder_2", CLIPTextModelWithProjection),
        ("tokenizer_2", CLIPTokenizer),
    ):
        if (path / sub).is_dir():
            text[sub] = load_part(path, sub, lambda d, c=cls: c.from_pretrained(d, **local))
    scheduler = load_part(path, "scheduler", lambda d: DDPMScheduler.from_pretrained(d, **local))
    arch = arch_of_config(unet.config, "text_encoder" in text, "text_encoder_2" in text)
    if arch == SD1:  # an SD 1.x folder with a stray text_encoder_2/ is still SD 1.x
        text = {k: v for k, v in text.items() if not k.endswith("_2")}
    check_fit(
        path,
        unet,
        vae,
        *(text.get(k) for k in ("text_encoder", "tokenizer")),
        text.get("text_encoder_2"),
        text.get("tokenizer_2"),
    )
    if is_gated(unet):  # a GLIGEN folder brings its own adapters
        check_finite(adapter_state_dict(unet), f"model {path}")
    if gated and arch == SDXL_REFINER:
        raise UserError(f"{path} is an SDXL refiner: it runs without adapters (--refiner)")
    if gated and arch == SDXL:
        check_phrase_width(path, unet, text["text_encoder"], text["text_encoder_2"])
    if gated:
        unet = make_gated(unet, seed=seed)
    for frozen in (vae, text.get("text_encoder"), text.get("text_encoder_2")):
        if frozen is not None:
            frozen.requires_grad_(False).eval()
    comps = Components(
        unet,
        vae,
        text.get("text_encoder"),
        text.get("tokenizer"),
        scheduler,
        path,
        text.get("text_encoder_2"),
        text.get("tokenizer_2"),
        force_zeros_for_empty_prompt=_force_zeros(path, arch),
        arch=arch,
    )
    return to(comps, device=device, dtype=dtype)


def check_phrase_width(path: Path, unet, text_encoder, text_encoder_2) -> None:
    """SDXL phrases are both encoders' pooled outputs side by side (``trainer.text``), and
    ``position_net`` takes ``cross_attention_dim`` wide phrases: the widths must agree."""
    width = text_encoder.config.hidden_size + text_encoder_2.config.projection_dim
    if width != unet.config.cross_attention_dim:
        raise UserError(
            f"{path}: phrase embeddings would be {width} wide (text_encoder width + "
            f"text_encoder_2 projection), position_net takes {unet.config.cross_attention_dim}"
        )


def _force_zeros(path: Path, arch: str) -> bool:
    """SDXL's ``force_zeros_for_empty_prompt`` from ``model_index.json`` (its own default:
    true for the base pipeline, false for the refiner's img2img pipeline)."""
    if arch == SD1:
        return False
    try:
        index = json.loads((path / "model_index.json").read_text())
    except (OSError, ValueError):
        index = {}
    value = index.get("force_zeros_for_empty_prompt") if isinstance(index, dict) else None
    return bool(value) if isinstance(value, bool) else arch == SDXL


def to(comps: Components, device=None, dtype=None) -> Components:
    """Move every network to ``device`` / ``dtype`` (None keeps the current one)."""
    try:
        device = torch.device(device) if device is not None else None
    except (RuntimeError, TypeError) as e:
        raise UserError(f"bad device {device!r}: {e}") from None
    if device is not None and device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda asked for, but torch sees no CUDA GPU here")
    for m in (comps.unet, comps.vae, comps.text_encoder, comps.text_encoder_2):
        if m is None:
            continue
        same_device = device is None or m.device.type == device.type
        if not same_device or (dtype is not None and m.dtype != dtype):
            with quiet_cast():
                m.to(device=device, dtype=dtype)
    return comps


# --------------------------------------------------------------------------- adapters


def is_adapter_key(name: str) -> bool:
    """Parameter names that belong to GLIGEN's adapters in a diffusers gated UNet."""
    return name.startswith("position_net.") or ".fuser." in name


def is_gated(unet: UNet2DConditionModel) -> bool:
    return unet.config.get("attention_type", "default") == GATED and hasattr(unet, "position_net")


def make_gated(unet: UNet2DConditionModel, *, seed: int | None = 0) -> UNet2DConditionModel:
    """A gated copy of a plain SD UNet: base weights copied unchanged, new layers by diffusers.

    diffusers initialises ``alpha_attn`` and ``alpha_dense`` to 0, and ``tanh(0) == 0``
    makes every fuser an exact identity, so the result equals the base model's output.
    An already gated UNet (a GLIGEN checkpoint) is returned as is.
    """
    if is_gated(unet):
        return unet
    if not isinstance(unet.config.cross_attention_dim, int):
        raise UserError("gated attention needs a single integer cross_attention_dim")
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    config["attention_type"] = GATED
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        gated = UNet2DConditionModel.from_config(config)
    missing, unexpected = gated.load_state_dict(unet.state_dict(), strict=False)
    assert not unexpected, f"gated UNet lacks base weights: {unexpected[:5]}"
    assert missing and all(is_adapter_key(k) for k in missing), (
        f"non-adapter weights left unset: {missing[:5]}"
    )
    for m in gated.modules():
        if isinstance(m, GatedSelfAttentionDense):
            assert m.alpha_attn.item() == 0.0 and m.alpha_dense.item() == 0.0, (
                "gates must start closed"
            )
    if unet.device != gated.device or unet.dtype != gated.dtype:
        with quiet_cast():
            gated.to(device=unet.device, dtype=unet.dtype)
    return gated


def adapter_names(unet: UNet2DConditionModel) -> set[str]:
    """Adapter parameter names found by module type, to cross-check the name rule."""
    names = set()
    for mod_name, m in unet.named_modules():
        if isinstance(m, GatedSelfAttentionDense) or mod_name == "position_net":
            names.update(f"{mod_name}.{p}" for p, _ in m.named_parameters())
    return names


def freeze_for_adapters(unet: UNet2DConditionModel) -> list[torch.nn.Parameter]:
    """Freeze the base model; return the adapter parameters, the only ones left trainable."""
    if not is_gated(unet):
        raise UserError("adapter training needs a gated UNet (load_components(..., gated=True))")
    unet.requires_grad_(False)
    params = []
    for name, p in unet.named_parameters():
        if is_adapter_key(name):
            p.requires_grad_(True)
            params.append(p)
    trainable = {n for n, p in unet.named_parameters() if p.requires_grad}
    assert trainable == adapter_names(unet), "trainable set must be exactly fuser + position_net"
    assert params, "no adapter parameters found"
    return params


def adapter_state_dict(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().to("cpu").contiguous()
        for k, v in unet.state_dict().items()
        if is_adapter_key(k)
    }


def adapter_config_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_adapters(unet: UNet2DConditionModel, path: str | Path, config: dict | None = None) -> Path:
    """Write adapters as safetensors plus a small JSON config beside it, both atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = adapter_state_dict(unet)
    meta = {
        "format": ADAPTER_FORMAT,
        "format_version": ADAPTER_FORMAT_VERSION,
        "attention_type": GATED,
        "cross_attention_dim": unet.config.cross_attention_dim,
        "n_tensors": len(state),
        "n_parameters": int(sum(v.numel() for v in state.values())),
        **(config or {}),
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": ADAPTER_FORMAT})
    atomic_write_text(adapter_config_path(path), json.dumps(meta, indent=2, default=str) + "\n")
    return path


def load_adapters(unet: UNet2DConditionModel, path: str | Path) -> dict:
    """Load adapters into a gated UNet; a file made for another model is a UserError."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"adapter file {path} does not exist (train one with `groundset train`)")
    if not is_gated(unet):
        raise UserError("adapters need a gated UNet (load the model with gated=True)")
    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type
        raise UserError(f"{path} is not a safetensors adapter file: {e}") from None
    own = {k: v for k, v in unet.state_dict().items() if is_adapter_key(k)}
    if set(state) != set(own):
        extra, lacking = sorted(set(state) - set(own)), sorted(set(own) - set(state))
        raise UserError(
            f"{path} does not fit this model: {len(extra)} unknown and {len(lacking)} missing "
            f"adapter tensors (e.g. {(extra or lacking)[0]})"
        )
    bad = [k for k in state if state[k].shape != own[k].shape]
    if bad:
        raise UserError(
            f"{path} does not fit this model: shape of {bad[0]} is {tuple(state[bad[0]].shape)}, "
            f"model has {tuple(own[bad[0]].shape)}"
        )
    check_finite(state, str(path))
    unet.load_state_dict(state, strict=False)
    cfg = adapter_config_path(path)
    return json.loads(cfg.read_text()) if cfg.is_file() else {}


def check_finite(state: dict[str, torch.Tensor], what: str) -> None:
    """Refuse NaN/inf weights: they sample NaN images that would pass as a finished run."""
    for name, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise UserError(
                f"{what} holds NaN or infinite values in {name} (a diverged or damaged "
                "training run); retrain, or use an earlier adapters file"
            )


def set_fuser(unet: torch.nn.Module, enabled: bool) -> None:
    """Switch every gated layer on or off, as diffusers' GLIGEN pipeline's ``enable_fuser``."""
    for m in unet.modules():
        if type(m) is GatedSelfAttentionDense:
            m.enabled = enabled


# --------------------------------------------------------------------------- latents


def to_latents(
    comps: Components, images: torch.Tensor, generator=None, sample: bool = True
) -> torch.Tensor:
    """Images in [-1, 1] to scaled latents: the VAE scaling factor is applied here, once."""
    if comps.vae is None:
        return images
    dist = comps.vae.encode(images.to(comps.vae.device, comps.vae.dtype)).latent_dist
    z = dist.sample(generator) if sample else dist.mode()
    return z * comps.vae.config.scaling_factor


def from_latents(comps: Components, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents to images in about [-1, 1]: the scaling factor is undone here, once."""
    if comps.vae is None:
        return latents
    return comps.vae.decode(latents.to(comps.vae.dtype) / comps.vae.config.scaling_factor).sample
