"""Attention MIL on synthetic bags where one instance in a positive bag carries the signal."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from analytics.models.mil import MILClassifier

FAST = {"hidden": 32, "attention_dim": 16, "lr": 2e-3, "max_epochs": 80, "device": "cpu"}


def make_bags(n: int, seed: int, dim: int = 8, shift: float = 3.0) -> tuple[list[np.ndarray], np.ndarray, list[int]]:
    """Bags of 40-60 standard-normal instances; a positive bag has ONE key instance shifted by ``shift`` in 3 dims.

    Mean pooling dilutes the key instance 40- to 60-fold; attention can find it.
    Returns the bags, labels and the key instance's index (-1 in negative bags).
    """
    rng = np.random.default_rng(seed)
    y = np.array([i % 2 for i in range(n)], dtype=np.int64)
    bags, keys = [], []
    for i in range(n):
        b = rng.normal(size=(int(rng.integers(40, 61)), dim)).astype(np.float32)
        key = -1
        if y[i]:
            key = int(rng.integers(len(b)))
            b[key, :3] += shift
        bags.append(b)
        keys.append(key)
    return bags, y, keys


@pytest.fixture(scope="module")
def data() -> tuple:
    return make_bags(80, seed=1), make_bags(80, seed=2)


@pytest.fixture(scope="module")
def attention_model(data: tuple) -> MILClassifier:
    (bags, y, _), _ = data
    return MILClassifier(pooling="attention", seed=0, **FAST).fit(bags, y)


def test_attention_beats_mean_pooling_and_finds_the_key_instances(data: tuple, attention_model: MILClassifier) -> None:
    (bags, y, _), (test, y_test, keys) = data
    mean = MILClassifier(pooling="mean", seed=0, **FAST).fit(bags, y)
    auc_attention = roc_auc_score(y_test, attention_model.predict_proba(test)[:, 1])
    auc_mean = roc_auc_score(y_test, mean.predict_proba(test)[:, 1])
    assert auc_attention >= 0.95
    assert auc_attention - auc_mean >= 0.1, (auc_attention, auc_mean)

    weights = attention_model.attention(test)
    positives = [i for i in range(len(test)) if y_test[i] == 1]
    top1 = np.mean([int(np.argmax(weights[i])) == keys[i] for i in positives])
    assert top1 >= 0.8
    # mean pooling spreads weight evenly: the hand-computed 1/n per instance
    for w, b in zip(mean.attention(test[:5]), test[:5]):
        np.testing.assert_allclose(w, np.full(len(b), 1.0 / len(b)), rtol=1e-6)


@pytest.mark.parametrize("pooling", ["gated", "max"])
def test_gated_attention_and_max_pooling_learn_and_weights_sum_to_one(data: tuple, pooling: str) -> None:
    (bags, y, _), (test, y_test, _) = data
    model = MILClassifier(pooling=pooling, seed=0, **{**FAST, "max_epochs": 40}).fit(bags[:48], y[:48])
    assert roc_auc_score(y_test, model.predict_proba(test)[:, 1]) >= 0.85
    for w, b in zip(model.attention(test), test):
        assert w.shape == (len(b),) and (w >= 0).all()
        assert w.sum() == pytest.approx(1.0, abs=1e-5)


def test_same_seed_same_bytes_and_scores_do_not_depend_on_neighbours(data: tuple, attention_model: MILClassifier) -> None:
    (bags, y, _), (test, _, _) = data
    again = MILClassifier(pooling="attention", seed=0, **FAST).fit(bags, y)
    a, b = attention_model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(a[k].numpy().tobytes() == b[k].numpy().tobytes() for k in a)
    full = attention_model.predict_proba(test)[:, 1]
    assert full.tobytes() == again.predict_proba(test)[:, 1].tobytes()
    # a bag is scored alone, so scoring a subset gives the same bits
    assert attention_model.predict_proba(test[3:7])[:, 1].tobytes() == full[3:7].tobytes()
    other = MILClassifier(pooling="attention", seed=1, **{**FAST, "max_epochs": 2}).fit(bags, y)
    assert other.state_dict()["encoder.0.weight"].numpy().tobytes() != a["encoder.0.weight"].numpy().tobytes()


def test_rebuilt_from_state_dict_and_config_predicts_the_same(data: tuple, attention_model: MILClassifier) -> None:
    _, (test, _, _) = data
    copy = MILClassifier.from_state(attention_model.config(), attention_model.state_dict())
    assert copy.predict_proba(test).tobytes() == attention_model.predict_proba(test).tobytes()


def test_bad_bags_are_refused_with_the_bag_named() -> None:
    good = [np.ones((3, 4), np.float32), np.zeros((2, 4), np.float32)]
    with pytest.raises(ValueError, match="bag 1 has shape"):
        MILClassifier(device="cpu").fit([good[0], np.zeros((0, 4), np.float32)], [0, 1])
    with pytest.raises(ValueError, match="bag 1 has 3 features"):
        MILClassifier(device="cpu").fit([good[0], np.zeros((2, 3), np.float32)], [0, 1])
    with pytest.raises(ValueError, match="both classes"):
        MILClassifier(device="cpu").fit(good, [1, 1])
    with pytest.raises(ValueError, match="pooling"):
        MILClassifier(pooling="sum")
