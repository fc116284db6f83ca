"""HalfSpaceForest must reproduce River's HalfSpaceTrees exactly, one event or a batch at a time."""

from __future__ import annotations

import doctest
import functools
import pickle
from typing import Any

import numpy as np
import pytest
from river.anomaly import HalfSpaceTrees

from streamguard.detectors import hst
from streamguard.detectors.hst import HalfSpaceForest

# Deliberately not sorted: River grows trees over sorted(x), the columns follow FEATURES.
FEATURES = ("f3", "f0", "f4", "f1", "f2")

PARAMS: dict[str, dict[str, Any]] = {
    "defaults": dict(seed=42),
    "small": dict(height=3, window_size=10, seed=1),
    "big": dict(n_trees=25, height=10, window_size=50, seed=7),
    "tiny": dict(n_trees=3, height=1, window_size=1, seed=5),
    "short": dict(n_trees=4, height=2, window_size=3, seed=0),
    "limits": dict(
        n_trees=8,
        height=6,
        window_size=100,
        limits={"f0": (-3, 3), "f1": (0.0, 10.0), "f2": [-1.0, 2.0]},
        seed=3,
    ),
}
LENGTH = {"defaults": 1300, "small": 300, "big": 600, "tiny": 60, "short": 90, "limits": 700}


def make_stream(kind: str, n: int, seed: int = 0) -> np.ndarray:
    """Random streams that exercise the walk: in range, with outliers, outside the limits."""
    rng = np.random.default_rng(seed)
    d = len(FEATURES)
    if kind == "uniform":
        return rng.random((n, d))
    if kind == "gaussian_outliers":
        X = rng.normal(0.5, 0.1, (n, d))
        out = rng.random(n) < 0.03
        X[out] = rng.uniform(-1.0, 2.0, (int(out.sum()), d))
        return X
    if kind == "wide":
        return rng.normal(0.0, 3.0, (n, d))
    raise ValueError(kind)


STREAMS = ("uniform", "gaussian_outliers", "wide")


def as_dict(row: np.ndarray | list[float]) -> dict[str, float]:
    return dict(zip(FEATURES, list(row), strict=True))


def river_model(params: dict) -> HalfSpaceTrees:
    p = dict(params)
    return HalfSpaceTrees(
        n_trees=p.pop("n_trees", 10),
        height=p.pop("height", 8),
        window_size=p.pop("window_size", 250),
        limits=p.pop("limits", None),
        seed=p.pop("seed", None),
    )


def learn_mask(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(n) < 0.8


@functools.cache
def river_scores(stream: str, name: str, mask_seed: int | None) -> np.ndarray:
    """River's score_one before learn_one per row; learn_one skipped where the mask is false."""
    X = make_stream(stream, LENGTH[name])
    mask = None if mask_seed is None else learn_mask(len(X), mask_seed)
    model = river_model(PARAMS[name])
    out = []
    for i, row in enumerate(X.tolist()):
        x = as_dict(row)
        out.append(model.score_one(x))
        if mask is None or mask[i]:
            model.learn_one(x)
    return np.array(out, dtype=np.float64)


def forest(name: str) -> HalfSpaceForest:
    return HalfSpaceForest(FEATURES, **PARAMS[name])


def batched_scores(model: HalfSpaceForest, X: np.ndarray, size: int, mask=None) -> np.ndarray:
    parts = []
    for start in range(0, len(X), size):
        m = None if mask is None else mask[start : start + size]
        parts.append(model.score_learn_many(X[start : start + size], m))
    return np.concatenate(parts)


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= 1e-12
    np.testing.assert_array_equal(got, expected)  # in fact bit-identical


def river_nodes(tree, heap: int = 0):
    """(heap index, node) pairs of a River padded tree."""
    yield heap, tree
    if hasattr(tree, "children"):
        left, right = tree.children
        yield from river_nodes(left, 2 * heap + 1)
        yield from river_nodes(right, 2 * heap + 2)


# ------------------------------------------------------------------------------ trees


@pytest.mark.parametrize("name", PARAMS)
def test_trees_are_river_trees(name):
    model = forest(name)
    ref = river_model(PARAMS[name])
    ref.learn_one(as_dict([0.5] * len(FEATURES)))  # River grows its trees on first learn
    feats, values = model.split_features, model.split_values
    for t, tree in enumerate(ref.trees):
        for heap, node in river_nodes(tree):
            if heap < 2**model.height - 1:
                assert FEATURES[feats[t, heap]] == node.feature
                assert values[t, heap] == node.threshold


def test_masses_match_river_nodes():
    X = make_stream("gaussian_outliers", 345)
    model, ref = forest("small"), river_model(PARAMS["small"])
    model.score_learn_many(X)
    for row in X.tolist():
        ref.learn_one(as_dict(row))
    l_mass, r_mass = model.l_mass, model.r_mass
    for t, tree in enumerate(ref.trees):
        for heap, node in river_nodes(tree):
            assert (l_mass[t, heap], r_mass[t, heap]) == (node.l_mass, node.r_mass)
    assert model.counter == ref.counter


# ----------------------------------------------------------------------------- scores


@pytest.mark.parametrize("size", [1, 7, 250, 1000])
@pytest.mark.parametrize("name", PARAMS)
@pytest.mark.parametrize("stream", STREAMS)
def test_batch_scores_equal_river(stream, name, size):
    X = make_stream(stream, LENGTH[name])
    assert_same(batched_scores(forest(name), X, size), river_scores(stream, name, None))


@pytest.mark.parametrize("size", [1, 7, 250, 1000])
@pytest.mark.parametrize("name", PARAMS)
def test_learn_mask_equals_river_skipping_learn_one(name, size):
    X = make_stream("gaussian_outliers", LENGTH[name])
    mask = learn_mask(len(X), seed=5)
    got = batched_scores(forest(name), X, size, mask)
    assert_same(got, river_scores("gaussian_outliers", name, 5))


@pytest.mark.parametrize("name", ["small", "tiny", "short", "limits"])
def test_one_event_path_equals_river(name):
    X = make_stream("wide", LENGTH[name])
    model = forest(name)
    got = []
    for row in X.tolist():
        got.append(model.score_one(as_dict(row)))
        model.learn_one(as_dict(row))
    assert_same(np.array(got), river_scores("wide", name, None))


def test_missing_feature_follows_rivers_heavier_child_rule():
    X = make_stream("uniform", 200)
    drop = np.random.default_rng(2).integers(-1, len(FEATURES), len(X))
    model, ref = forest("small"), river_model(PARAMS["small"])
    for i, row in enumerate(X.tolist()):
        x = as_dict(row)
        if i > 0 and drop[i] >= 0:  # River grows its trees from the keys of the first x
            del x[FEATURES[drop[i]]]
        assert model.score_one(x) == ref.score_one(x)
        model.learn_one(x)
        ref.learn_one(x)
    l_mass = model.l_mass
    for t, tree in enumerate(ref.trees):
        for heap, node in river_nodes(tree):
            assert l_mass[t, heap] == node.l_mass


def test_one_event_and_batch_paths_mix():
    X = make_stream("gaussian_outliers", LENGTH["limits"])
    model, got, start = forest("limits"), [], 0
    for size in [3, 120, 1, 250, 40, 5, 281]:
        if size < 10:
            for row in X[start : start + size].tolist():
                got.append(model.score_one(as_dict(row)))
                model.learn_one(as_dict(row))
        else:
            got.extend(model.score_learn_many(X[start : start + size]))
        start += size
    assert start == len(X)
    assert_same(np.array(got), river_scores("gaussian_outliers", "limits", None))


def test_nan_goes_right_like_river():
    X = make_stream("uniform", 200)
    X[np.random.default_rng(4).random(X.shape) < 0.1] = np.nan
    ref = river_model(PARAMS["small"])
    expected = []
    for row in X.tolist():
        expected.append(ref.score_one(as_dict(row)))
        ref.learn_one(as_dict(row))
    assert_same(batched_scores(forest("small"), X, 7), np.array(expected))


@pytest.mark.parametrize("walk_once", [False, True])
def test_score_then_learn_matches_a_tick_of_river(walk_once):
    """The detector's usage: score a tick from the state at its start, then learn the kept;
    the anomaly detector walks the trees once and hands the leaves to both."""
    X = make_stream("gaussian_outliers", 1300)
    keep = learn_mask(len(X), seed=9)
    model, ref = forest("defaults"), river_model(PARAMS["defaults"])
    for start in range(0, len(X), 300):
        tick, kept = X[start : start + 300], keep[start : start + 300]
        expected = [ref.score_one(as_dict(row)) for row in tick.tolist()]
        if walk_once:
            leaves = model.leaves_many(tick)
            assert_same(model.score_leaves(leaves), np.array(expected))
            model.learn_leaves(leaves, kept)
        else:
            assert_same(model.score_many(tick), np.array(expected))
            model.learn_many(tick, kept)
        for row, k in zip(tick.tolist(), kept, strict=True):
            if k:
                ref.learn_one(as_dict(row))


# ------------------------------------------------------------------------------ state


def test_score_many_does_not_change_state():
    X = make_stream("uniform", 400)
    model = forest("small")
    model.learn_many(X[:295])
    before = pickle.dumps(model)
    model.score_many(X[295:])
    assert pickle.dumps(model) == before


def test_scores_are_in_unit_range_and_high_for_outliers():
    X = make_stream("gaussian_outliers", 3000)
    model = forest("defaults")
    scores = model.score_learn_many(X)[250:]
    outlier = np.abs(X[250:] - 0.5).max(axis=1) > 0.5
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    assert scores[outlier].mean() > scores[~outlier].mean() + 0.2


def test_first_window_scores_zero():
    model = forest("small")
    assert model.score_one(as_dict([0.1] * 5)) == 0.0
    assert np.all(model.score_learn_many(make_stream("uniform", 10)) == 0.0)
    assert not model.first_window


def test_same_seed_same_forest_other_seed_differs():
    X = make_stream("uniform", 600)
    a = HalfSpaceForest(FEATURES, height=5, window_size=50, seed=11)
    b = HalfSpaceForest(FEATURES, height=5, window_size=50, seed=11)
    c = HalfSpaceForest(FEATURES, height=5, window_size=50, seed=12)
    assert_same(a.score_learn_many(X), b.score_learn_many(X))
    np.testing.assert_array_equal(a.split_values, b.split_values)
    assert not np.array_equal(a.split_values, c.split_values)


def test_pickle_round_trip_mid_window():
    X = make_stream("gaussian_outliers", 900)
    model = forest("limits")
    model.score_learn_many(X[:437])
    model.score_one(as_dict(X[437]))  # fills the one-event cache, which is not pickled
    copy = pickle.loads(pickle.dumps(model))
    assert copy.counter == model.counter == 37
    assert_same(
        copy.score_learn_many(X[437:], X[437:, 0] > 0.3),
        model.score_learn_many(X[437:], X[437:, 0] > 0.3),
    )
    assert copy.score_one(as_dict(X[0])) == model.score_one(as_dict(X[0]))


def test_repr_and_clone_keep_settings():
    limits = {"f0": (-3.0, 3.0)}
    model = HalfSpaceForest(FEATURES, 4, 5, 60, limits, 9)
    assert repr(model) == (
        "HalfSpaceForest(features=('f3', 'f0', 'f4', 'f1', 'f2'), n_trees=4, height=5, "
        "window_size=60, limits={'f0': (-3.0, 3.0)}, seed=9)"
    )
    assert model.limits is limits and model.features is FEATURES
    model.learn_many(make_stream("uniform", 100))
    fresh = model.clone()
    assert fresh.counter == 0 and fresh.first_window
    np.testing.assert_array_equal(fresh.split_values, model.split_values)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(features=[]), "features must be a non-empty sequence"),
        (dict(features="abc"), "features must be a non-empty sequence"),
        (dict(features=["a", "a"]), "features must be unique"),
        (dict(n_trees=0), "n_trees must be an integer >= 1, got 0"),
        (dict(height=0), "height must be an integer >= 1, got 0"),
        (dict(height=2.5), "height must be an integer >= 1, got 2.5"),
        (dict(window_size=-1), "window_size must be an integer >= 1, got -1"),
        (dict(limits={"a": (1.0, 1.0)}), r"limits\['a'\] must be finite with low < high"),
        (dict(limits={"a": (2.0, 1.0)}), r"limits\['a'\] must be finite with low < high"),
        (dict(limits={"a": (0.0, np.inf)}), r"limits\['a'\] must be finite with low < high"),
        (dict(limits={"a": (0.0, 1.0, 2.0)}), r"limits\['a'\] must be finite with low < high"),
        (dict(limits={"a": ("x", 1.0)}), r"limits\['a'\] must be finite with low < high"),
        (dict(limits={"z": (0.0, 1.0)}), "limits has feature 'z', which is not in features"),
    ],
)
def test_bad_settings_raise(kwargs, message):
    args = dict(features=["a", "b"]) | kwargs
    with pytest.raises(ValueError, match=message):
        HalfSpaceForest(**args)


def test_bad_input_shapes_raise():
    model = forest("small")
    with pytest.raises(ValueError, match=r"X must have shape \(n, 5\)"):
        model.score_many(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"mask must have shape \(3,\)"):
        model.learn_many(np.zeros((3, 5)), np.ones(2, dtype=bool))
    assert model.score_learn_many(np.zeros((0, 5))).shape == (0,)


def test_docstring_examples_run():
    result = doctest.testmod(hst)
    assert result.attempted > 0 and result.failed == 0
