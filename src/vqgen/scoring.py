"""Scoring a run: what `Model.score` (and `vqgen score`) does over the model's own operations.

The model's spec says what is scored (reconstructions, samples); the real images are the run's data (the
held-out split, else the training split); the features and figures come from `vqgen.score` (the Inception
network, the digit reader, FID, KID); the entries are kept in the scoring run's scores.json (runs.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from vqgen import __version__
from vqgen.errors import UsageError

if TYPE_CHECKING:
    import torch

    from vqgen.data import ImageData
    from vqgen.runs import Checkpoint

Log = Callable[[str], None]


def score(model, n: int, *, again: bool, device: str | None, seed: int, given: dict, network: str | None,
          log: Log, progress=None) -> dict:
    """`Model.score`'s work, for an `api.Model` whose settings it has checked (`given`: the sampling options
    asked for): see its docstring."""
    import torch

    from vqgen import runs
    from vqgen.planning import resolve_device
    from vqgen.progress import TrainProgress

    progress = progress or TrainProgress()
    notes: list[str] = []

    def note(line: str) -> None:
        notes.append(line)
        log(line)

    model.to(resolve_device(device or "auto"))
    images_of = model._image_model(log)
    held = images_of.data(log)
    split, real, labels, n = _reference(held, n, note)
    from vqgen import score as S

    why_not = S.reader_fits(held.image_size, held.channels, held.class_names)
    networks = ["inception"] + (["digits"] if why_not is None else [])
    if network is not None:   # one network only (PSNR and SSIM of reconstructions are always computed)
        if network == "digits" and why_not is not None:
            raise UsageError(f"`network` digits: {why_not}")
        networks = [network]
    jobs = []
    for what in model.spec.scored:
        if what == "reconstructions":
            jobs.append(_ScoreJob(what, model.checkpoint, {}, lambda: model._reconstructions(real[:n], progress)))
            continue
        try:
            drawer, source = model._sampling(log)
        except UsageError as e:
            note(f"Samples not scored: {e}")
            continue
        options = {**{k: v for k, v in source.spec.sampling_defaults(source.model).items() if k != "labels"},
                   **given}
        asked = (torch.arange(n) % source.model.num_classes) if source.model.conditional else None
        jobs.append(_ScoreJob(what, drawer, options, lambda: model._samples(n, seed, progress, given), asked,
                              source.class_names if asked is not None else None))
    settings = {"n": n, "split": split, "seed": seed}
    # Each kind's entries per network: kept in its record for these settings, or to compute (None).
    entries = {}
    for job in jobs:
        kept = runs.read_scores(job.run.run_dir)
        for network in (["pixels"] if job.what == "reconstructions" else []) + networks:
            want = {"what": job.what, "network": network, **settings, "epoch": job.run.epoch,
                    "options": job.options}
            stored = None if again else next((e for e in reversed(kept) if _same_settings(e, want)), None)
            entries[job.what, network] = (job, want, stored and {**stored, "stored": True})
    if any(network == "inception" and stored is None for (_, network), (_, _, stored) in entries.items()):
        try:   # with no images: loads the network, or says which extra it needs, before anything is computed
            S.inception_features(real[:0], device=model.device)
        except UsageError as e:
            if why_not is not None:
                raise
            note(f"No Inception figures (FID, KID): {e}")
            entries = {k: v for k, v in entries.items() if k[1] != "inception" or v[2] is not None}
    references = _References(held, split, real, n, model.device, progress)
    found = []
    for (what, network), (job, want, stored) in entries.items():
        if stored is None:
            if job.made is None:
                for line in job.images()[2]:
                    note(line)
            entry = _score_one(job, network, references, labels[:n] if labels is not None else None,
                               seed, progress)
            stored = {**want, **entry, "network_description": S.NETWORKS.get(network, "none: pixels compared"),
                      "dataset": model.config.train.dataset, "run": runs.run_label(job.run.run_dir),
                      "vqgen_version": __version__, "when": _now()}
            kept = [e for e in runs.read_scores(job.run.run_dir) if not _same_settings(e, want)]
            runs.write_scores(job.run.run_dir, kept + [stored])
            stored = {**stored, "stored": False}
        found.append(stored)
    if why_not is not None:
        note(f"No digit reader figures: {why_not}")
    return {"run": runs.run_label(model.run_dir), "n": n, "split": split, "scores": found, "notes": notes}


SSIM_MISSING = 'No SSIM: it comes from torchmetrics, in the score extra: pip install "vqgen[score]"'


def ssim_function():
    """torchmetrics' SSIM (11x11 Gaussian window), or None where the score extra is not installed."""
    try:
        from torchmetrics.functional.image import structural_similarity_index_measure
    except ImportError:
        return None
    return structural_similarity_index_measure


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _reference(held: "ImageData", n: int, note: Log):
    """The real images scores are measured against: (split, images, labels, n). The held-out split, the
    training split where the held-out one has fewer than n images, and n lowered where neither has n."""
    splits = [("test", held.test_images, held.test_labels), ("train", held.train_images, held.train_labels)]
    for name, images, labels in splits:
        if len(images) >= n:
            if name == "train":
                note(f"The held-out split has {len(held.test_images):,} images, fewer than {n:,}: "
                     "scored against the training split")
            return name, images, labels, n
    name, images, labels = max(splits, key=lambda s: len(s[1]))
    note(f"n lowered to {len(images):,}: the largest split of the dataset ({name}) has no more images")
    return name, images, labels, len(images)


def newest_scores(entries: list[dict]) -> list[dict]:
    """The newest of a run's score entries for each kind (reconstructions, samples) and network."""
    newest: dict = {}
    for e in entries:
        newest.pop((e.get("what"), e.get("network")), None)
        newest[(e.get("what"), e.get("network"))] = e
    order = {"reconstructions": 0, "samples": 1}
    return sorted(newest.values(), key=lambda e: order.get(e.get("what"), 2))


def _same_settings(entry: dict, want: dict) -> bool:
    return all(entry.get(k) == v for k, v in want.items())


@dataclass
class _ScoreJob:
    """What one kind of score measures: the run that keeps it, the sampler's options, its images (made once,
    on first use: (uint8 images, figures of their own, notes)), and the classes samples were asked for."""
    what: str
    run: "Checkpoint"
    options: dict
    make: Callable
    asked: "torch.Tensor | None" = None
    class_names: list[str] | None = None
    made: tuple | None = None

    def images(self) -> tuple:
        if self.made is None:
            self.made = self.make()
        return self.made


class _References:
    """The real images' features per network: of min(2n, all) images, cached on disk per dataset, size,
    split, count, the images' own hash and network, so the floor's second set comes from the same pass."""

    def __init__(self, held: "ImageData", split: str, real: "torch.Tensor", n: int, device, progress):
        self.held, self.split, self.n, self.device, self.progress = held, split, n, device, progress
        self.real = real[:min(len(real), 2 * n)]
        self.found: dict = {}

    def features(self, network: str) -> "torch.Tensor":
        from vqgen import score as S

        if network not in self.found:
            import hashlib

            h = self.held
            digest = hashlib.sha1(self.real.contiguous().numpy().tobytes()).hexdigest()[:12]   # the images themselves
            key = f"{h.source}|{h.channels}x{h.image_size}x{h.image_size}|{self.split}|{len(self.real)}|{digest}"
            self.found[network] = S.cached_reference(
                key, network, lambda: _features(network, self.real, self.device, self.progress, "real images"))
        return self.found[network]

    def sets(self, network: str):
        """(the n real images' features, the floor's two sets of real features, their size)."""
        f, n = self.features(network), self.n
        if len(f) >= 2 * n:
            return f[:n], f[:n], f[n:2 * n], n
        return f[:n], f[:n // 2], f[n // 2:n], n // 2


def _features(network: str, images: "torch.Tensor", device, progress, what: str) -> "torch.Tensor":
    from vqgen import score as S

    if network == "inception":
        return S.inception_features(images, device=device, progress=progress.counter(f"Inception: {what}"))
    return S.digit_features(images, device=device)


def _score_one(job: _ScoreJob, network: str, refs: _References, labels: "torch.Tensor | None", seed: int,
               progress) -> dict:
    """One entry of scores.json: the figures of `job`'s images by one network, and the real images' own."""
    from vqgen import score as S

    images, own, _ = job.images()
    if network == "pixels":
        return {"figures": own, "real": {}}
    ref, a, b, real_n = refs.sets(network)
    feats = _features(network, images, refs.device, progress, job.what)
    entry = {"figures": {"fid": S.fid(feats, ref)}, "real": {"fid": S.fid(a, b)}, "real_n": real_n}
    if job.what == "samples" and network == "inception":
        entry["figures"]["kid"], entry["figures"]["kid_std"] = S.kid(feats, ref, subset_size=min(1000, len(feats)),
                                                                     seed=seed)
        entry["real"]["kid"], entry["real"]["kid_std"] = S.kid(a, b, subset_size=min(1000, len(a)), seed=seed)
    if job.what == "samples" and network == "digits" and job.asked is not None and labels is not None:
        read = S.read_digits(images, device=refs.device)
        real_read = S.read_digits(refs.real[:len(labels)], device=refs.device)
        entry["figures"]["read_as_asked"] = float((read == job.asked).float().mean())
        entry["real"]["read_as_asked"] = float((real_read == labels).float().mean())
        names = job.class_names or [str(k) for k in range(int(job.asked.max()) + 1)]
        entry["per_class"] = {names[k]: float((read[job.asked == k] == k).float().mean())
                              for k in range(len(names)) if (job.asked == k).any()}
        entry["real_per_class"] = {names[k]: float((real_read[labels == k] == k).float().mean())
                                   for k in range(len(names)) if (labels == k).any()}
    return entry
