"""HRNet as a 2.5D CT encoder on a real CT (random weights: shape, finiteness, provenance)."""

from __future__ import annotations

import numpy as np

from pipeline.config import FeatureSet
from pipeline.ct.embedder import infer_mode, make_embedder
from pipeline.source import Source

from ct_data import LIVER, TS_IMAGE, TS_SEG


def test_hrnet_w18_small_as_a_25d_encoder():
    fs = FeatureSet(name="ct_hrnet", modality="ct", encoder="hrnet_w18_small", weights="random",
                    spacing=[4, 4, 4], input_size=[64])
    assert infer_mode(fs) == "2.5d"
    emb = make_embedder(fs, "cpu")
    rec = emb.record()
    assert (rec.dim, rec.weights, rec.params["input_size"]) == (2048, "random", [64, 64])
    assert rec.params["preprocessing"]["config_source"] == "timm pretrained config hrnet_w18_small.gluon_in1k"
    frame = emb.embed(Source("CT1", "P1", "fp", {"image_path": str(TS_IMAGE), "mask_path": str(TS_SEG), "mask_label": LIVER}))
    e = np.asarray(frame["embedding"].to_list(), dtype=np.float32)
    assert frame.height > 1 and e.shape == (frame.height, 2048) and np.isfinite(e).all()
    assert frame["z"].n_unique() == frame.height  # one instance per slice
    emb.close()
