"""`vqgen score` and `Model.score`: what each model declares is scored, kept in the run's scores.json with its
settings, read back rather than computed again, shown by eval, runs, compare and the demo.

The Inception network is replaced by a cheap stand-in that counts its calls (the engine's own tests cover the
network); the digit reader, FID, KID and the reference cache are the real ones."""

import json
import sys
from pathlib import Path

import pytest
import torch

N = 40   # of the tiny dataset's 80 held-out images: the floor's second set fits beside the first


@pytest.fixture
def inception(monkeypatch):
    """The Inception features replaced by 16 pooled pixel means per image; the sizes of the calls, in order."""
    from vqgen import score

    calls = []

    def features(images, *, device="cpu", batch_size=64, progress=None):
        if len(images):   # vqgen asks with no images first, to learn whether the network is installed
            calls.append(len(images))
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        return torch.nn.functional.adaptive_avg_pool2d(x.mean(1, keepdim=True), 4).flatten(1).double()

    monkeypatch.setattr(score, "inception_features", features)
    return calls


@pytest.fixture
def no_extra(monkeypatch):
    """The score extra as if it were not installed: the Inception network and torchmetrics' SSIM missing."""
    from vqgen import score
    from vqgen.errors import UsageError

    def missing(images, **kwargs):
        raise UsageError('FID and KID need the Inception network: pip install "vqgen[score]"')

    monkeypatch.setattr(score, "inception_features", missing)
    monkeypatch.setitem(sys.modules, "torchmetrics", None)
    monkeypatch.setitem(sys.modules, "torchmetrics.functional.image", None)


def entries(run: Path) -> list[dict]:
    return json.loads((run / "scores.json").read_text())["scores"]


def by(found: list[dict], what: str, network: str) -> dict:
    (entry,) = [e for e in found if e["what"] == what and e["network"] == network]
    return entry


def fits_80(text: str) -> bool:
    """At most 80 columns and nothing cut off; a path shortened in the middle (/tmp/p…dels/mnist) is fine."""
    cut = [word for word in text.split() if "…" in word and "/" not in word]
    return not cut and max(len(line) for line in text.splitlines()) <= 80


def has_ssim() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchmetrics") is not None


# --------------------------------------------------------------------------- what is scored, per model


def test_the_models_declare_what_is_scored():
    from vqgen import models
    from vqgen.models.registry import ModelSpec

    assert models.get("vqvae").scored == ("reconstructions", "samples")   # samples through its prior
    assert models.get("vae").scored == ("reconstructions", "samples")
    assert models.get("prior").scored == ("samples",)
    spec = models.get("prior")
    with pytest.raises(ValueError, match="scoring reconstructions needs the operation reconstruct"):
        ModelSpec(name="x", display_name="x", model_class=object, config_class=object, defaults=spec.defaults,
                  pictures=spec.pictures, operations=frozenset({"sample"}), scores=frozenset({"reconstructions"}))


def test_a_vqvae_run_keeps_its_reconstruction_scores(home, writable, invoke, inception, monkeypatch):
    import vqgen
    from vqgen.metrics import psnr

    work = writable(home)
    monkeypatch.setenv("COLUMNS", "80")
    r = invoke("score", "--run", "runs/vqvae-mnist", "--n", N, cwd=work)
    assert r.exit_code == 0, r.output
    run = work / "runs" / "vqvae-mnist"
    found = entries(run)
    assert {(e["what"], e["network"]) for e in found} == \
        {("reconstructions", "pixels"), ("reconstructions", "inception"), ("reconstructions", "digits")}
    for e in found:
        assert (e["n"], e["split"], e["seed"], e["epoch"]) == (N, "test", 0, 1)
        assert e["vqgen_version"] == vqgen.__version__ and e["when"] and e["network_description"]
    # PSNR of the reconstructions as images (clamped to [0, 1]), over the first N held-out images
    model = vqgen.load(run)
    x = model.held_out(N)
    mse = float(((model.reconstruct(x).clamp(0, 1) - x) ** 2).mean())
    pixels = by(found, "reconstructions", "pixels")["figures"]
    assert pixels["psnr"] == pytest.approx(psnr(mse), abs=0.05)
    assert ("ssim" in pixels) == has_ssim() and (not has_ssim() or 0 < pixels["ssim"] <= 1)
    for network in ("inception", "digits"):
        e = by(found, "reconstructions", network)
        assert e["figures"]["fid"] > 0 and e["real"]["fid"] > 0 and e["real_n"] == N   # 40 vs the next 40
    assert inception == [2 * N, N]    # the real images (and the floor's second set), then the reconstructions
    # the table, in 80 columns, says which network each figure used; a VQ-VAE without a prior says so
    assert fits_80(r.stdout)
    assert "rFID" in r.stdout and "PSNR" in r.stdout and "Inception" in r.stdout and "digit reader" in r.stdout
    assert f"{N} images, held-out split" in r.stdout and "real:" in r.stdout
    assert "Samples not scored: no prior for" in r.stderr


def test_a_second_score_reads_the_record_and_again_recomputes(home, writable, invoke, inception):
    work = writable(home)
    first = invoke("score", "--run", "runs/vqvae-mnist", "--n", N, "--json", cwd=work)
    assert first.exit_code == 0 and len(inception) == 2, first.output
    again = invoke("score", "--run", "runs/vqvae-mnist", "--n", N, "--json", cwd=work)
    assert again.exit_code == 0 and len(inception) == 2              # nothing computed
    assert "Scored before" in again.stderr and "--again scores anew" in again.stderr
    kept, shown = json.loads(first.stdout)["scores"], json.loads(again.stdout)["scores"]
    assert all(e["stored"] for e in shown) and not any(e["stored"] for e in kept)
    assert [e["figures"] for e in shown] == [e["figures"] for e in kept]
    anew = invoke("score", "--run", "runs/vqvae-mnist", "--n", N, "--again", cwd=work)
    assert anew.exit_code == 0 and inception[2:] == [N]               # the real images' features are cached
    other = invoke("score", "--run", "runs/vqvae-mnist", "--n", 20, cwd=work)   # other settings: computed
    assert other.exit_code == 0 and len(inception) == 5
    found = entries(work / "runs" / "vqvae-mnist")
    assert sorted(e["n"] for e in found if e["network"] == "inception") == [20, N]   # --again replaced its entry


def test_a_prior_scores_its_samples_per_class(home, writable, invoke, inception, monkeypatch):
    work = writable(home)
    monkeypatch.setenv("COLUMNS", "80")
    r = invoke("score", "--run", "runs/prior-mnist", "--n", N, cwd=work)
    assert r.exit_code == 0, r.output
    found = entries(work / "runs" / "prior-mnist")
    assert {(e["what"], e["network"]) for e in found} == {("samples", "inception"), ("samples", "digits")}
    net = by(found, "samples", "inception")
    assert set(net["figures"]) == {"fid", "kid", "kid_std"} and set(net["real"]) == {"fid", "kid", "kid_std"}
    assert net["options"]["temperature"] > 0 and "labels" not in net["options"]
    digits = by(found, "samples", "digits")
    assert 0 <= digits["figures"]["read_as_asked"] <= 1 and digits["figures"]["fid"] > 0
    assert sorted(digits["per_class"]) == [str(d) for d in range(10)]
    # each class was asked N / 10 times, so each share is a multiple of a quarter
    assert all(share * 4 == round(share * 4) for share in digits["per_class"].values())
    assert digits["figures"]["read_as_asked"] == pytest.approx(sum(digits["per_class"].values()) / 10)
    assert sorted(digits["real_per_class"]) == [str(d) for d in range(10)]
    assert fits_80(r.stdout) and "gFID" in r.stdout and "KID" in r.stdout and "read as asked" in r.stdout
    assert "asked 7" in r.stdout and " ± " in r.stdout


def test_samples_are_scored_and_kept_per_set_of_sampling_options(home, writable, invoke, inception):
    work = writable(home)
    for args in ([], ["--guidance", "2"], ["--guidance", "2"]):
        r = invoke("score", "--run", "runs/prior-mnist", "--n", N, *args, cwd=work)
        assert r.exit_code == 0, r.output
    digits = [e for e in entries(work / "runs" / "prior-mnist") if e["network"] == "digits"]
    assert sorted(str(e["options"]["guidance"]) for e in digits) == ["2.0", "None"]   # the second 2 was read back
    vae = invoke("score", "--run", "runs/vae-mnist", "--n", N, "--sampler", "mix", "--json", cwd=work)
    assert vae.exit_code == 0, vae.output
    mixed = by(json.loads(vae.stdout)["scores"], "samples", "digits")
    assert mixed["options"]["sampler"] == "mix"
    wrong = invoke("score", "--run", "runs/prior-mnist", "--n", N, "--sampler", "mix", cwd=work)
    assert wrong.exit_code == 2 and "--sampler" in wrong.stderr, wrong.output


def test_one_network_alone(home, writable, invoke, inception, one_clean_line):
    work = writable(home)
    r = invoke("score", "--run", "runs/prior-mnist", "--n", N, "--network", "digits", "--json", cwd=work)
    assert r.exit_code == 0, r.output
    assert {e["network"] for e in json.loads(r.stdout)["scores"]} == {"digits"} and inception == []
    one_clean_line(invoke("score", "--run", "runs/prior-mnist", "--network", "pixels", cwd=work), 2, "--network")


def test_the_same_from_python(home, writable, inception, monkeypatch):
    import vqgen

    work = writable(home)
    monkeypatch.chdir(work)
    model = vqgen.load("runs/vae-mnist")
    first = model.score(n=20)
    assert (first["n"], first["split"]) == (20, "test") and first["run"].endswith("vae-mnist")
    assert [(e["what"], e["network"]) for e in first["scores"]] == [
        ("reconstructions", "pixels"), ("reconstructions", "inception"), ("reconstructions", "digits"),
        ("samples", "inception"), ("samples", "digits")]
    assert "read_as_asked" not in by(first["scores"], "samples", "digits")["figures"]   # it is not conditional
    calls = len(inception)
    second = model.score(n=20)
    assert len(inception) == calls and all(e["stored"] for e in second["scores"])
    assert [(e["what"], e["network"]) for e in model.scores()] == [(e["what"], e["network"]) for e in first["scores"]]


def test_more_images_than_the_held_out_split_are_scored_against_the_training_split(home, writable, invoke,
                                                                                    inception):
    work = writable(home)
    r = invoke("score", "--run", "runs/vqvae-mnist", "--n", 100, "--json", cwd=work)
    assert r.exit_code == 0, r.output
    assert "held-out split has 80 images, fewer than 100: scored against the training split" in r.stderr
    found = json.loads(r.stdout)
    assert found["split"] == "train" and {e["split"] for e in found["scores"]} == {"train"}
    assert by(found["scores"], "reconstructions", "digits")["real_n"] == 100   # 320 training images: 100 vs 100
    big = invoke("score", "--run", "runs/vqvae-mnist", "--n", 1000, "--json", cwd=work)
    assert big.exit_code == 0 and "n lowered to 320" in big.stderr and json.loads(big.stdout)["n"] == 320


# --------------------------------------------------------------------------- shown where runs are read back


def test_eval_runs_compare_and_the_demo_show_the_scores(home, writable, invoke, inception, monkeypatch):
    work = writable(home)
    monkeypatch.setenv("COLUMNS", "80")
    for run in ("vqvae-mnist", "prior-mnist"):
        assert invoke("score", "--run", f"runs/{run}", "--n", N, cwd=work).exit_code == 0
    ev = invoke("eval", "--run", "runs/vqvae-mnist", cwd=work)
    assert ev.exit_code == 0 and fits_80(ev.stdout)
    assert "scores" in ev.stdout and "rFID" in ev.stdout and "PSNR" in ev.stdout
    report = json.loads(invoke("eval", "--run", "runs/vqvae-mnist", "--json", cwd=work).stdout)
    assert {e["network"] for e in report["scores"]} == {"pixels", "inception", "digits"}
    rows = {row["run"]: row for row in json.loads(invoke("runs", "--json", cwd=work).stdout)}
    assert rows["prior-mnist"]["score"]["figure"] == "gFID" and rows["prior-mnist"]["score"]["network"] == "inception"
    assert rows["vqvae-mnist"]["score"]["figure"] == "rFID" and rows["vae-mnist"]["score"] is None
    narrow = invoke("runs", cwd=work)   # a score column would make these rows wrap at 80 columns
    assert narrow.exit_code == 0 and fits_80(narrow.stdout) and "gFID" not in narrow.stdout
    assert "Scores left out to fit the terminal: vqgen runs --json" in narrow.stderr
    monkeypatch.setenv("COLUMNS", "250")   # the data column holds this tiny dataset's whole path
    wide = invoke("runs", cwd=work)
    assert f"gFID {rows['prior-mnist']['score']['value']:.2f}" in wide.stdout and "rFID" in wide.stdout
    assert len(wide.stdout.splitlines()) == 5 and "Scores left out" not in wide.stderr   # a line per run
    monkeypatch.setenv("COLUMNS", "80")
    cmp = invoke("compare", "runs/vqvae-mnist", "runs/prior-mnist", "--out", work / "c.png", cwd=work)
    assert cmp.exit_code == 0 and fits_80(cmp.stderr), cmp.stderr
    assert "rFID" in cmp.stderr and "gFID" in cmp.stderr and "asked 3" in cmp.stderr
    data = json.loads(invoke("compare", "runs/vqvae-mnist", "runs/prior-mnist", "--out", work / "c.png",
                             "--json", cwd=work).stdout)
    assert [len(r["scores"]) for r in data["runs"]] == [3, 2]
    pytest.importorskip("gradio", reason='the demo extra is not installed: pip install "vqgen[demo]"')
    from vqgen.demo import Page

    text = Page(work / "runs").describe(str(work / "runs" / "prior-mnist"))
    assert "Scores: gFID " in text and "(Inception, n 40)" in text and "read as asked" in text
    assert "Scores" not in Page(work / "runs").describe(str(work / "runs" / "vae-mnist"))


def test_a_damaged_record_is_named_and_listings_go_on(home, writable, invoke, one_clean_line):
    work = writable(home)
    (work / "runs" / "vqvae-mnist" / "scores.json").write_text("{not json")
    one_clean_line(invoke("score", "--run", "runs/vqvae-mnist", "--n", N, cwd=work), 1, "scores.json: damaged")
    assert invoke("runs", cwd=work).exit_code == 0
    assert invoke("eval", "--run", "runs/vqvae-mnist", cwd=work).exit_code == 0


# --------------------------------------------------------------------------- networks and extras


def test_without_the_extra_digits_still_score_and_the_rest_is_one_line(home, writable, invoke, no_extra):
    work = writable(home)
    r = invoke("score", "--run", "runs/vqvae-mnist", "--n", N, cwd=work)
    assert r.exit_code == 0, r.output
    found = entries(work / "runs" / "vqvae-mnist")
    assert {e["network"] for e in found} == {"pixels", "digits"}
    assert "ssim" not in by(found, "reconstructions", "pixels")["figures"]
    assert 'No Inception figures (FID, KID): FID and KID need the Inception network: pip install "vqgen[score]"' \
        in r.stderr
    assert 'No SSIM: it comes from torchmetrics, in the score extra: pip install "vqgen[score]"' in r.stderr


@pytest.fixture
def colour_run(tmp_path, face_folder, invoke, tiny):
    """A tiny VQ-VAE trained on 32x32 colour images without labels: the digit reader does not fit them."""
    config = tiny(tmp_path, "image_size: 32\nchannels: 3\n")
    r = invoke("train", "--dataset", face_folder, "--config", config, "--name", "faces", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    return tmp_path


def test_data_the_digit_reader_does_not_fit_says_so(colour_run, invoke, inception):
    r = invoke("score", "--run", "runs/faces", "--n", 10, cwd=colour_run)
    assert r.exit_code == 0, r.output
    assert "No digit reader figures: the digit reader knows 28x28 grey digits; this dataset is 32x32 colour" \
        in r.stderr
    found = entries(colour_run / "runs" / "faces")
    assert {e["network"] for e in found} == {"pixels", "inception"} and {e["split"] for e in found} == {"train"}


def test_without_the_extra_other_data_is_refused_in_one_line(colour_run, invoke, no_extra, one_clean_line):
    one_clean_line(invoke("score", "--run", "runs/faces", "--n", 10, cwd=colour_run), 2,
                   'pip install "vqgen[score]"')
    assert not (colour_run / "runs" / "faces" / "scores.json").exists()


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("n, message", [(5, "--n must be at least 10"), (60_000, "at most 50,000")])
def test_bad_n_is_refused_before_torch_loads(tmp_path, n, message):
    import subprocess

    code = ("import sys\nfrom vqgen.cli import app\n"
            f"try:\n    app(['score', '--n', '{n}'])\nexcept SystemExit as e:\n    print('exit', e.code)\n"
            "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert "exit 2" in out.stdout and "torch not loaded" in out.stdout, out
    errors = out.stderr.strip().splitlines()
    assert len(errors) == 1 and message in errors[0], out.stderr


def test_a_bad_device_or_run_is_refused(home, invoke, one_clean_line):
    one_clean_line(invoke("score", "--device", "tpu", cwd=home), 2, "--device tpu: use auto, cpu, cuda or mps")
    one_clean_line(invoke("score", "--run", home / "nowhere", cwd=home), 2, "no such run directory")


def test_the_help_default_is_the_librarys(invoke):
    from vqgen.api import SCORE_N

    r = invoke("score", "--help")
    assert r.exit_code == 0 and "<bool>" not in r.stdout
    text = " ".join(r.stdout.replace("│", " ").split())
    assert f"[default: {SCORE_N}]" in text and 'pip install "vqgen[score]"' in text


def test_a_ready_trained_run_is_scored_without_writing_into_the_package(tmp_path, invoke, inception):
    from vqgen import runs

    shipped = sorted(p.name for p in runs.READY_DIR.rglob("*"))
    r = invoke("score", "--n", 20, "--json", cwd=tmp_path)   # no runs here: the ready-trained VQ-VAE
    assert r.exit_code == 0, r.output
    assert "Using the ready-trained VQ-VAE ready:vqvae-mnist" in r.stderr
    found = json.loads(r.stdout)
    assert found["run"] == "ready:vqvae-mnist"
    assert {(e["what"], e["run"]) for e in found["scores"]} == {("reconstructions", "ready:vqvae-mnist"),
                                                               ("samples", "ready:prior-vqvae-mnist")}
    kept = tmp_path / "runs" / "ready-trained"
    assert sorted(p.name for p in kept.iterdir()) == ["prior-vqvae-mnist.scores.json", "vqvae-mnist.scores.json"]
    assert sorted(p.name for p in runs.READY_DIR.rglob("*")) == shipped
    again = invoke("score", "--run", "ready:prior-vqvae-mnist", "--n", 20, cwd=tmp_path)
    assert again.exit_code == 0 and "Scored before" in again.stderr
