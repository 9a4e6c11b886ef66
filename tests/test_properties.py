"""Property-based tests: any setting value and any file content is either used or refused by vqgen's own errors."""

import gzip
import json
import math
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vqgen import data as D
from vqgen import models, runs
from vqgen.config import RunConfig, TrainConfig, read_yaml, resolve_config
from vqgen.errors import UsageError, VQGenError
from vqgen.settings import field_names

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["1e-3", "euclidean", "cosine", "onecycle", "constant", "cpu", "3"]),
    st.lists(st.integers(-5, 600), max_size=4),
)
SHAPES = {"vqvae": models.ImageShape(28, 1), "vae": models.ImageShape(32, 3), "prior": models.CodeShape(16, 3, 4)}


def settings_for(model: str):
    keys = field_names(TrainConfig) + field_names(models.get(model).config_class)
    return st.dictionaries(st.sampled_from(keys), ANY_VALUE, max_size=4)


@pytest.mark.parametrize("model", ["vqvae", "vae", "prior"])
@FAST
@given(data=st.data())
def test_any_setting_values_give_a_valid_config_or_a_named_refusal(model, data):
    values = data.draw(settings_for(model))
    try:
        cfg = resolve_config(model, SHAPES[model], file_values=values, file_name="c.yaml")
    except UsageError as e:
        named = [k for k in values if k in str(e)]
        assert named or "unknown setting" in str(e) or "divisible" in str(e) or "multiple" in str(e), (values, e)
        return
    # Accepted: every number finite and in range, and the model builds.
    for v in list(vars(cfg.train).values()) + list(vars(cfg.model_config).values()):
        assert not (isinstance(v, float) and not math.isfinite(v))
    assert RunConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with torch.device("meta"):
        models.get(model).build(cfg.model_config)


@FAST
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_any_config_file_is_read_or_refused(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_bytes(text.encode("utf-8", "replace"))
    try:
        values = read_yaml(p)
    except UsageError:
        return
    assert isinstance(values, dict)
    try:
        resolve_config("vqvae", SHAPES["vqvae"], file_values=values)
    except UsageError:
        pass


@FAST
@given(blob=st.binary(max_size=400), gz=st.booleans())
def test_any_idx_bytes_are_read_or_refused(tmp_path, blob, gz):
    folder = tmp_path / f"idx{os.urandom(4).hex()}"
    folder.mkdir()
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    (folder / name).write_bytes(gzip.compress(blob) if gz else blob)
    try:
        D.load_images(str(folder), 28, 1, use_cache=False)
    except VQGenError:
        pass


@FAST
@given(blob=st.binary(max_size=600))
def test_any_file_in_a_run_is_read_or_refused(tmp_path, blob):
    run = tmp_path / f"run{os.urandom(4).hex()}"
    run.mkdir()
    for name, read in ((runs.WEIGHTS, lambda: runs.load_checkpoint(run)),
                       (runs.METRICS, lambda: runs.read_metrics(run / runs.METRICS)),
                       (runs.LATENTS, lambda: runs.load_latents(run)),
                       (runs.RESUME, lambda: runs.load_resume(run, 1)),
                       (runs.CONFIG, lambda: runs.read_run_config(run))):
        (run / name).write_bytes(blob)
        try:
            read()
        except VQGenError:
            pass


@FAST
@given(blob=st.binary(max_size=300), which=st.sampled_from(["info.json", "images-train.u8", "labels-train.i64"]))
def test_any_damage_to_a_cache_entry_is_found_and_rebuilt(tmp_path, blob, which, mnist_idx):
    cache = tmp_path / f"cache{os.urandom(4).hex()}"
    os.environ["VQGEN_CACHE"] = str(cache)
    first = D.load_images(str(mnist_idx), 28, 1)
    entry = next(p for p in cache.iterdir() if p.is_dir())
    (entry / which).write_bytes(blob)
    again = D.load_images(str(mnist_idx), 28, 1)
    assert torch.equal(first.train_images, again.train_images)
    assert torch.equal(first.train_labels, again.train_labels)
