"""Training a model end to end: config, data, run directory, trainer, checkpoints.

`train()` is what `vqgen train` calls. It resolves the configuration (defaults,
then a YAML file, then flags), loads the data once into memory, creates a new
run directory (or reopens one to resume), and wires the generic `Trainer` to
the callbacks that evaluate on the held-out split, save a picture grid, append
to `metrics.csv` and write the checkpoint after every epoch.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from vqgen import data as D
from vqgen import generate, images, runs
from vqgen.config import TRAIN_PRESETS, RunConfig, TrainConfig, build, coerce, read_yaml, split_settings
from vqgen.errors import RunError, UsageError
from vqgen.models import MODEL_CONFIGS, build_model
from vqgen.progress import TrainProgress
from vqgen.trainer import Trainer

MODEL_CHOICES = ("vqvae", "vae", "prior")
SHOWN_TEST = ("mse", "psnr", "bits_per_code", "loss")   # held-out figures shown after each epoch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is visible; use --device auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: Apple's MPS is not available here; use --device auto or cpu")
    if name not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {name}: use auto, cpu, cuda or mps")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def default_model_config(model: str, size: int, channels: int):
    """The model's defaults for images of this shape (the VAE picks its depth)."""
    if model == "vqvae":
        return {"image_size": size, "channels": channels}
    if model == "vae":
        dims = [32, 64, 128, 256, 512]
        depth = 0
        while depth < len(dims) and size % 2 ** (depth + 1) == 0 and size // 2 ** (depth + 1) >= 3:
            depth += 1
        if depth == 0:
            raise UsageError(f"images of {size}x{size} are too small or odd-sized for the VAE; "
                             "set image_size to a multiple of 4 in the config")
        small = size <= 32
        return {"image_size": size, "channels": channels, "hidden_dims": dims[:depth],
                "latent_dim": 16 if small else 256}
    return {}


def lr_lambda(schedule: str, total_steps: int):
    """One-cycle style: 10% linear warm-up, then cosine decay to 1% of the peak."""
    if schedule == "constant":
        return lambda step: 1.0
    warm = max(1, int(0.1 * total_steps))

    def f(step: int) -> float:
        if step < warm:
            return 0.04 + 0.96 * step / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))
    return f


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict
    interrupted: bool = False


# --------------------------------------------------------------------------- data for each model


def codebook_fingerprint(vqvae) -> str:
    return hashlib.sha1(vqvae.quantizer.codebook.detach().cpu().float().numpy().tobytes()).hexdigest()[:16]


@torch.inference_mode()
def encode_codes(vqvae, images_u8: torch.Tensor, device, batch_size: int = 256) -> torch.Tensor:
    """Code grids (N, h, w) of uint8 images, computed once for the prior."""
    vqvae.eval().to(memory_format=torch.channels_last)
    out = []
    for i in range(0, images_u8.shape[0], batch_size):
        x = images_u8[i:i + batch_size].to(device).float().div(255)
        out.append(vqvae.encode_indices(x.contiguous(memory_format=torch.channels_last)).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


# --------------------------------------------------------------------------- config


def resolve_config(model: str, dataset: str | None, config_file: str | None, overrides: dict,
                   vqvae_ckpt=None) -> RunConfig:
    if model not in MODEL_CHOICES:
        raise UsageError(f"--model {model}: unknown model; use vqvae, vae or prior")
    model_cls = MODEL_CONFIGS[model]
    file_train, file_model = split_settings(read_yaml(config_file), model_cls) if config_file else ({}, {})
    train_values = {**TRAIN_PRESETS[model], **coerce(TrainConfig, file_train)}
    train_values.update({k: v for k, v in overrides.items() if v is not None})
    if dataset is not None:
        train_values["dataset"] = dataset
    if model == "prior":
        vq = vqvae_ckpt
        train_values["dataset"] = vq.config.train.dataset
        base = {"codebook_size": vq.model.cfg.codebook_size, "grid": vq.model.latent_grid,
                "num_classes": len(vq.info.get("class_names") or [])}
        model_values = {**base, **coerce(model_cls, file_model)}
        for k in ("codebook_size", "grid"):
            model_values[k] = base[k]
    else:
        src = D.resolve_dataset(train_values.get("dataset", TrainConfig.dataset))
        file_model = coerce(model_cls, file_model)
        if "image_size" in file_model and "channels" in file_model:
            size, channels = file_model["image_size"], file_model["channels"]
        else:
            size, channels = D.probe_shape(src)
            size, channels = file_model.get("image_size", size), file_model.get("channels", channels)
        model_values = {**default_model_config(model, size, channels), **file_model}
        if model == "vae" and "augment" not in file_train and "augment" not in overrides:
            train_values["augment"] = channels == 3   # the seed's flips and rotations for faces
    train_cfg = build(TrainConfig, train_values)
    for name in ("epochs", "batch_size"):
        if getattr(train_cfg, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if not train_cfg.lr > 0:
        raise UsageError("--lr must be a positive number")
    try:
        model_cfg = build(model_cls, model_values)
        build_model(model, model_cfg)  # fails early on impossible shapes
    except ValueError as e:
        raise UsageError(f"model settings do not fit together: {e}") from None
    return RunConfig(model, train_cfg, model_cfg)


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model, batches) -> dict:
    """Average loss terms on held-out data; PSNR from the mean MSE where there is one."""
    model.eval()
    if hasattr(model, "epoch_metrics"):
        model.epoch_metrics()  # count codebook use over the held-out data alone
    sums: dict[str, float] = {}
    count = 0
    for batch in batches:
        out = model.loss(*batch)
        n = batch[0].shape[0]
        count += n
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + v.item() * n
    logs = {k: v / max(count, 1) for k, v in sums.items()}
    if "mse" in logs:
        logs["psnr"] = 10 * math.log10(1 / max(logs["mse"], 1e-12))
    if hasattr(model, "epoch_metrics"):
        logs.update(model.epoch_metrics())
    return logs


def autoencoder_picture(model, originals: torch.Tensor) -> torch.Tensor:
    """Originals on the top row, reconstructions under them."""
    model.eval()
    with torch.no_grad():
        recon = model.reconstruct(originals)
    return images.grid_image(torch.cat([originals, recon]).cpu(), nrow=originals.shape[0])


def prior_picture(prior, vqvae, class_names, generator) -> torch.Tensor:
    """Ten samples per class (one row each), or an 8x8 grid for an unconditional prior."""
    prior.eval()
    device = next(prior.parameters()).device
    if prior.conditional:
        k = len(class_names)
        labels = torch.arange(k, device=device).repeat_interleave(10)
        n, nrow = 10 * k, 10
    else:
        labels, n, nrow = None, 64, 8
    codes = prior.sample(n, labels, temperature=generate.PRIOR_TEMPERATURE,
                         guidance=generate.prior_guidance(prior, None), generator=generator)
    with torch.no_grad():
        pics = vqvae.decode_indices(codes)
    return images.grid_image(pics.cpu(), nrow=nrow)


@torch.no_grad()
def training_latents(model, images_u8: torch.Tensor, device, batch_size: int = 500) -> torch.Tensor:
    """Latent means of the training images, for the VAE's `mix` sampler."""
    model.eval()
    out = []
    for i in range(0, images_u8.shape[0], batch_size):
        mu, _ = model.encode(images_u8[i:i + batch_size].to(device).float().div(255))
        out.append(mu.cpu())
    return torch.cat(out)


# --------------------------------------------------------------------------- the run


def train(model: str = "vqvae", dataset: str | None = None, config_file: str | None = None,
          overrides: dict | None = None, out: Path = Path("runs"), name: str | None = None,
          resume: Path | None = None, vqvae_run: Path | None = None,
          progress: TrainProgress | None = None) -> TrainResult:
    progress = progress or TrainProgress()
    log = progress.log
    overrides = dict(overrides or {})
    state = None
    vq = None

    if resume is not None:
        resume = Path(resume)
        ckpt = runs.load_checkpoint(resume)
        run_dir = ckpt.run_dir
        cfg = ckpt.config
        model = cfg.model
        state = runs.load_resume(run_dir / runs.RESUME)
        for key in ("epochs", "device"):
            if overrides.get(key) is not None:
                setattr(cfg.train, key, overrides[key])
        if state["epoch"] >= cfg.train.epochs:
            raise UsageError(f"{run_dir} has already trained {state['epoch']} of {cfg.train.epochs} epochs; "
                             "pass a larger --epochs to train on")
        if model == "prior":
            vq = runs.load_checkpoint(Path(cfg.extra["vqvae_run"]), expect=("vqvae",))
            check_prior_matches(cfg, vq)
    else:
        if model == "prior":
            vq_path = Path(vqvae_run) if vqvae_run else runs.find_latest_run(("vqvae",), out)
            vq = runs.load_checkpoint(vq_path, expect=("vqvae",))
            log(f"Prior for the VQ-VAE run {vq.run_dir}")
        cfg = resolve_config(model, dataset, config_file, overrides, vq)
        if model == "prior":
            cfg.extra = {"vqvae_run": str(vq.run_dir.resolve()), "vqvae_codebook": codebook_fingerprint(vq.model)}

    device = resolve_device(cfg.train.device)
    generator = seed_everything(cfg.train.seed)
    # Tiny gradients late in training become denormal floats, which CPUs handle
    # many times slower; flushing them to zero keeps later epochs as fast as the first.
    torch.set_flush_denormal(True)

    # Data: decoded once, cached, then kept in memory (on the GPU when training there).
    if model == "prior":
        img_data = generate.config_data(vq.config, log)
        vq.model.to(device)
        train_x = encode_codes(vq.model, img_data.train_images, device)
        test_x = encode_codes(vq.model, img_data.test_images, device)
        scale = False
    else:
        img_data = generate.config_data(cfg, log)
        train_x, test_x = img_data.train_images, img_data.test_images
        scale = True
    train_y = img_data.train_labels if _uses_labels(cfg) else None
    test_y = img_data.test_labels if _uses_labels(cfg) else None
    batches = D.Batches(train_x, train_y, cfg.train.batch_size, augment=cfg.train.augment and scale,
                        device=device, generator=generator, scale=scale)
    test_batches = D.Batches(test_x, test_y, cfg.train.eval_batch_size, shuffle=False, device=device, scale=scale)

    net = build_model(model, cfg.model_config).to(device)
    if scale:  # convolutional models run faster on channels-last tensors, on CPU and GPU alike
        net = net.to(memory_format=torch.channels_last)
    # The fused Adam step is one kernel instead of several per parameter.
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                                 fused=device.type in ("cpu", "cuda"))
    total_steps = cfg.train.epochs * len(batches)
    rows: list[dict] = []
    start_epoch = 0
    if state is not None:
        net.load_state_dict(ckpt.model.state_dict())
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"])
        torch.set_rng_state(state["torch_rng"])
        generator.set_state(state["data_rng"])
        rows = runs.read_metrics(run_dir / runs.METRICS)[:start_epoch]
    schedule = lr_lambda(cfg.train.lr_schedule, total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    if start_epoch:  # continue the schedule where the run stopped (over the new total of epochs)
        done = start_epoch * len(batches)
        scheduler.last_epoch = done
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * schedule(done)

    if state is None:
        run_dir = runs.new_run_dir(Path(out), name or f"{model}-{runs.slug(cfg.train.dataset)}")
        cfg.save_yaml(run_dir / runs.CONFIG)
        log(f"Run directory: {run_dir}")
    else:
        log(f"Resuming {run_dir} at epoch {start_epoch + 1} of {cfg.train.epochs}")
    log(f"Training a {runs.MODEL_NAMES[model]} on {img_data.source}: {len(train_x):,} training and "
        f"{len(test_x):,} held-out {'code grids' if model == 'prior' else 'images'}, on {device}")

    info = {"dataset_source": img_data.source, "class_names": img_data.class_names,
            "image_size": img_data.image_size, "channels": img_data.channels,
            "train_images": len(train_x), "test_images": len(test_x)}
    grid_originals = img_data.test_images[: cfg.train.grid_images].to(device).float().div(255)

    def save_checkpoint(epoch: int, metrics: dict) -> None:
        runs.save_weights(run_dir / runs.WEIGHTS, net, cfg, {**info, "epoch": epoch, "metrics": metrics})
        runs.save_resume(run_dir / runs.RESUME, {
            "optimizer": optimizer.state_dict(), "epoch": epoch,
            "torch_rng": torch.get_rng_state(), "data_rng": generator.get_state()})

    def on_epoch_end(tr: Trainer) -> None:
        test_logs = evaluate(net, test_batches)
        row = {"epoch": tr.epoch, **{f"train_{k}": v for k, v in tr.epoch_logs.items()
                                      if k not in ("img_per_s", "seconds")},
               **{f"test_{k}": v for k, v in test_logs.items()},
               "img_per_s": tr.epoch_logs["img_per_s"], "seconds": tr.epoch_logs["seconds"]}
        rows.append(row)
        if model == "prior":
            pic = prior_picture(net, vq.model, img_data.class_names, torch.Generator().manual_seed(0))
            images.save_png(pic, run_dir / f"samples_epoch_{tr.epoch:03d}.png")
        else:
            images.save_png(autoencoder_picture(net, grid_originals), run_dir / f"recon_epoch_{tr.epoch:03d}.png")
        if model == "vae":  # as pytorch/examples' VAE: new images from the same latents every epoch
            pics = generate.sample_vae(net, 64, generator=torch.Generator().manual_seed(0))
            images.save_grid(pics, run_dir / f"samples_epoch_{tr.epoch:03d}.png", nrow=8)
        if model == "vae" and tr.epoch == tr.epochs:
            latents = training_latents(net, train_x, device)
            runs.atomic_write(run_dir / runs.LATENTS, lambda tmp: save_file({"mu": latents}, str(tmp)))
        runs.write_metrics(run_dir / runs.METRICS, rows)
        save_checkpoint(tr.epoch, {k: v for k, v in row.items() if isinstance(v, (int, float))})
        tr.epoch_logs = {**{k: v for k, v in tr.epoch_logs.items() if k not in ("seconds",)},
                         **{f"test_{k}": v for k, v in test_logs.items() if k in SHOWN_TEST}}

    trainer = Trainer(net, optimizer, batches, epochs=cfg.train.epochs, start_epoch=start_epoch,
                      scheduler=scheduler, grad_clip=cfg.train.grad_clip, progress=progress)
    trainer.add_callback("on_epoch_end", on_epoch_end)
    try:
        trainer.run()
    except KeyboardInterrupt:
        save_checkpoint(trainer.epoch, rows[-1] if rows else {})
        log(f"Interrupted: saved {run_dir} after {trainer.epoch} full epochs of {cfg.train.epochs}. "
            f"Continue with: vqgen train --resume {run_dir}")
        return TrainResult(run_dir, rows[-1] if rows else {}, interrupted=True)
    curves = [c for c in ("train_loss", "test_loss", "test_mse") if rows and c in rows[-1]]
    images.plot_curves(rows, curves, run_dir / "loss_curve.png", title=f"{model} on {runs.slug(cfg.train.dataset)}")
    return TrainResult(run_dir, rows[-1] if rows else {})


def _uses_labels(cfg: RunConfig) -> bool:
    return cfg.model != "prior" or cfg.model_config.num_classes > 0


def check_prior_matches(prior_cfg: RunConfig, vq) -> None:
    """Refuse a prior whose VQ-VAE was retrained or replaced since."""
    want = prior_cfg.extra.get("vqvae_codebook")
    if want and want != codebook_fingerprint(vq.model):
        raise RunError(f"the VQ-VAE in {vq.run_dir} has changed since this prior was trained on it "
                       f"(different codebook); train a new prior: vqgen train --model prior --run {vq.run_dir}")
