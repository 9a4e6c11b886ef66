"""`vqgen map`: held-out latents placed by PCA and coloured by class, with the codebook's usage."""

import json

import numpy as np
from PIL import Image


def test_map_places_held_out_latents_by_class(records_home, invoke, writable):
    home = writable(records_home)
    r = invoke("map", "--run", home / "runs" / "vqvae-mnist", "--json", cwd=home)
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["method"] == "pca" and len(m["points"]) == 80 and set(m["points"][0]) == {"x", "y", "label"}
    assert 0 < m["explained_variance"][1] <= m["explained_variance"][0] < 1
    assert len(m["codebook_usage"]) == 16 and sum(m["codebook_usage"]) == 80 * 49
    img = Image.open(m["png"])
    assert img.size[0] >= 1000
    xs = np.array([p["x"] for p in m["points"]])
    assert abs(xs.mean()) < 1e-3 * (np.abs(xs).max() + 1)          # PCA coordinates are centred
