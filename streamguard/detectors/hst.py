"""Half-space trees as flat numpy arrays: River's scores, micro-batched.

River's ``HalfSpaceTrees`` walks Python node objects one event at a time and, every
``window_size`` learns, copies ``l_mass`` into ``r_mass`` on every node of every tree, so its
cost grows with ``2 ** height``. Two facts make an exact batch version possible:

* Scoring reads only ``r_mass``, which is frozen for a whole window, so the score of every
  event inside one window depends only on which leaf it reaches in each tree.
* Every learn adds one to each node on one root-to-leaf path, so a node's ``l_mass`` is the
  sum of its leaves' counts: counting leaves is enough, internal masses are rebuilt by
  pairwise sums at the window rollover.

:class:`HalfSpaceForest` therefore walks a whole batch down all trees level by level, splits
the batch at window boundaries, and scores each event as the sum over trees of a per-leaf
score table rebuilt once per window. The trees are grown with the same sequence of
``random.Random(seed)`` calls as River's ``make_padded_tree``, so splits are identical.

Layout: split nodes are in heap order (children of ``i`` at ``2i+1, 2i+2``), flat over trees.
Masses, leaf counts and leaf scores are stored level by level in *bit-reversed* order, where
the children of position ``q`` at depth ``d`` sit at ``q`` and ``q + 2**d``: each level is then
two contiguous halves of the next, so the per-window sums and score table are plain
contiguous array operations rather than stride-2 or size-2-axis ones.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["HalfSpaceForest"]

# River's constants: split padding in make_padded_tree, and the paper's 0.1 size limit.
PADDING = 0.15
SIZE_LIMIT_FRACTION = 0.1
DEFAULT_LIMITS = (0.0, 1.0)


class HalfSpaceForest:
    """River's ``HalfSpaceTrees`` with identical scores, stored as arrays and batched.

    High scores mean anomalies; every score is 0 until the first window has been learned.
    ``features`` fixes the columns of batch input and the trees: they are the trees River
    grows when its first learned ``x`` has exactly these keys (River grows them over
    ``sorted(x)``; keys of ``limits`` outside ``features`` are rejected here). In ``learn_one``
    and ``score_one``, keys of ``x`` outside ``features`` are ignored and a missing feature
    takes River's path (the child with more ``l_mass``). Batch input has no missing values;
    NaN compares like River's ``nan < threshold`` (false: go right).

    River's own example, reproduced:

    >>> forest = HalfSpaceForest(["x"], n_trees=5, height=3, window_size=3, seed=42)
    >>> for x in [0.5, 0.45, 0.43]:
    ...     forest.learn_one({"x": x})
    >>> scores = []
    >>> for x in [0.5, 0.45, 0.43, 0.44, 0.445, 0.45, 0.0]:
    ...     forest.learn_one({"x": x})
    ...     scores.append(f"{forest.score_one({'x': x}):.3f}")
    >>> print(*scores)
    0.107 0.071 0.107 0.107 0.107 0.071 0.853

    The batch path scores each row as River would just before learning it:

    >>> import numpy as np
    >>> from river.anomaly import HalfSpaceTrees
    >>> X = np.random.default_rng(0).random((700, 2))
    >>> forest = HalfSpaceForest(["a", "b"], n_trees=4, height=5, window_size=100, seed=7)
    >>> scores = forest.score_learn_many(X)
    >>> river_hst = HalfSpaceTrees(n_trees=4, height=5, window_size=100, seed=7)
    >>> expected = []
    >>> for a, b in X.tolist():
    ...     expected.append(river_hst.score_one({"a": a, "b": b}))
    ...     river_hst.learn_one({"a": a, "b": b})
    >>> bool(np.array_equal(scores, expected)), float(scores[:100].max())
    (True, 0.0)
    """

    def __init__(
        self,
        features: Sequence[str],
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        limits: dict[str, tuple[float, float]] | None = None,
        seed: int | None = None,
    ) -> None:
        self.features = features
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.limits = limits
        self.seed = seed
        _validate(features, n_trees, height, window_size, limits)

        self._columns = tuple(features)  # private copy: the caller may mutate theirs
        self._n_features = len(features)
        self._n_internal = 2**height - 1
        self._n_leaves = 2**height
        self._size_limit = SIZE_LIMIT_FRACTION * window_size
        # Same expression as River's _max_score; below 2**53 in practice, so exact as float.
        self._max_score = n_trees * window_size * (2 ** (height + 1) - 1)
        self._feat, self._thr = _grow_forest(features, n_trees, height, limits or {}, seed)
        self._right = _right_children(n_trees, height)
        self._last_stride = 2 ** (height - 1)  # left leaf = right leaf - this
        self._roots = np.arange(n_trees, dtype=np.intp) * self._n_internal

        self._counter = 0
        self._first_window = True
        self._counts = np.zeros(n_trees * self._n_leaves, dtype=np.int64)
        self._r_mass = np.zeros((n_trees, 2 ** (height + 1) - 1), dtype=np.int64)
        self._leaf_score = np.zeros(n_trees * self._n_leaves, dtype=np.int64)
        self._make_python_views()

    # ----------------------------------------------------------------- introspection

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"

    def _params(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "n_trees": self.n_trees,
            "height": self.height,
            "window_size": self.window_size,
            "limits": self.limits,
            "seed": self.seed,
        }

    def clone(self) -> HalfSpaceForest:
        """A fresh, untrained forest with the same settings (hence the same trees)."""
        return type(self)(**self._params())

    @property
    def counter(self) -> int:
        """Learns in the current window, as River's ``counter``."""
        return self._counter

    @property
    def first_window(self) -> bool:
        """True until the first window has been learned (all scores are 0 until then)."""
        return self._first_window

    @property
    def l_mass(self) -> np.ndarray:
        """Per-node mass of the current window, shape (n_trees, 2**(height+1)-1), heap order."""
        masses = _level_sums(self._counts.reshape(self.n_trees, self._n_leaves), self.height)
        return masses[:, _heap_to_level_order(self.height)]

    @property
    def r_mass(self) -> np.ndarray:
        """Per-node reference mass (the last full window), same layout as ``l_mass``."""
        return self._r_mass[:, _heap_to_level_order(self.height)]

    @property
    def split_features(self) -> np.ndarray:
        """Column index split on by each internal node, shape (n_trees, 2**height-1)."""
        return self._feat.reshape(self.n_trees, self._n_internal).copy()

    @property
    def split_values(self) -> np.ndarray:
        """Threshold of each internal node (left when value < threshold), heap order."""
        return self._thr.reshape(self.n_trees, self._n_internal).copy()

    # ---------------------------------------------------------------------- pickling

    def __getstate__(self) -> dict[str, Any]:
        """Drop the Python-list views; they are rebuilt from the arrays on load."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_py_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._make_python_views()

    def _make_python_views(self) -> None:
        """Lists for the one-event path: Python indexing beats numpy on scalars."""
        self._py_feat = self._feat.tolist()
        self._py_thr = self._thr.tolist()
        self._py_right = self._right.tolist()
        self._py_roots = self._roots.tolist()
        self._py_leaf_score: list[int] | None = None

    # --------------------------------------------------------------- one event (dict)

    def learn_one(self, x: Mapping[str, float]) -> None:
        """River's ``learn_one``; a missing feature follows the heavier child, as in River."""
        leaves = self._leaves_one(x)
        self._counts[leaves] += 1
        self._counter += 1
        if self._counter == self.window_size:
            self._rollover()

    def score_one(self, x: Mapping[str, float]) -> float:
        """River's ``score_one``: 0 in the first window, else 1 - mass score / max score."""
        if self._first_window:
            return 0.0
        if self._py_leaf_score is None:
            self._py_leaf_score = self._leaf_score.tolist()
        table = self._py_leaf_score
        total = sum(table[leaf] for leaf in self._leaves_one(x))
        return 1 - float(total) / self._max_score

    def _leaves_one(self, x: Mapping[str, float]) -> list[int]:
        """The leaf reached in each tree (flat leaf ids); Python loop, it is one event."""
        try:
            values = [float(x[name]) for name in self._columns]
        except KeyError:
            return self._leaves_missing(x)
        feat, thr, right = self._py_feat, self._py_thr, self._py_right
        stride, steps = self._last_stride, self.height - 1
        leaves = []
        for node in self._py_roots:
            for _ in range(steps):
                node = right[node] - (values[feat[node]] < thr[node])
            leaves.append(right[node] - stride * (values[feat[node]] < thr[node]))
        return leaves

    def _leaves_missing(self, x: Mapping[str, float]) -> list[int]:
        """River's rule for a missing split feature: go to the child with more ``l_mass``
        (left on ties), using the current window's masses before this event is counted."""
        present = np.array([name in x for name in self._columns])
        values = np.array([float(x[n]) if n in x else np.nan for n in self._columns])
        l_mass = self.l_mass
        trees = np.arange(self.n_trees)
        heap = np.zeros(self.n_trees, dtype=np.intp)
        for _ in range(self.height):
            flat = trees * self._n_internal + heap
            col = self._feat[flat]
            by_value = ~(values[col] < self._thr[flat])
            by_mass = l_mass[trees, 2 * heap + 1] < l_mass[trees, 2 * heap + 2]
            heap = 2 * heap + 1 + np.where(present[col], by_value, by_mass)
        position = _bit_reverse(heap - self._n_internal, self.height)
        return (trees * self._n_leaves + position).tolist()

    # ------------------------------------------------------------------- batch (array)

    def score_many(self, X: np.ndarray) -> np.ndarray:
        """Scores of all rows from the current state; learns nothing."""
        return self.score_leaves(self.leaves_many(X))

    def learn_many(self, X: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Learn the rows (only those where ``mask`` is true), rolling windows as River does."""
        self.learn_leaves(self.leaves_many(X), mask)

    def leaves_many(self, X: np.ndarray) -> np.ndarray:
        """The leaf each row reaches in each tree, (n, n_trees). The trees never change, so
        a caller that scores rows and then learns them can walk the trees once and hand the
        leaves to :meth:`score_leaves` and :meth:`learn_leaves`."""
        return self._leaves(self._check_X(X))

    def score_leaves(self, leaves: np.ndarray) -> np.ndarray:
        """:meth:`score_many` of the rows that reached ``leaves``."""
        return self._scores(leaves)

    def learn_leaves(self, leaves: np.ndarray, mask: np.ndarray | None = None) -> None:
        """:meth:`learn_many` of the rows that reached ``leaves``."""
        self._run(leaves, self._check_mask(mask, len(leaves)), None)

    def score_learn_many(self, X: np.ndarray, learn_mask: np.ndarray | None = None) -> np.ndarray:
        """Per row, River's ``score_one`` then ``learn_one`` (skipped where ``learn_mask`` is
        false). Exact because scores within a window read only the frozen ``r_mass``."""
        X = self._check_X(X)
        out = np.empty(len(X), dtype=np.float64)
        self._run(self._leaves(X), self._check_mask(learn_mask, len(X)), out)
        return out

    def _run(self, leaves: np.ndarray, mask: np.ndarray | None, out: np.ndarray | None) -> None:
        """Process the rows in segments that end where a window fills up."""
        learned = None if mask is None else np.cumsum(mask)
        start, n = 0, len(leaves)
        while start < n:
            stop = self._segment_end(start, n, learned)
            if out is not None:
                out[start:stop] = self._scores(leaves[start:stop])
            seg = leaves[start:stop] if mask is None else leaves[start:stop][mask[start:stop]]
            self._learn_leaves(seg)
            start = stop

    def _segment_end(self, start: int, n: int, learned: np.ndarray | None) -> int:
        """One past the row whose learn completes the current window (or ``n``)."""
        need = self.window_size - self._counter
        if learned is None:
            return min(n, start + need)
        target = need + (int(learned[start - 1]) if start else 0)
        return min(n, int(np.searchsorted(learned, target)) + 1)

    def _learn_leaves(self, leaves: np.ndarray) -> None:
        """Count one window's worth (at most) of learned rows, then roll over if full."""
        if not len(leaves):
            return
        np.add.at(self._counts, leaves.ravel(), 1)  # O(rows), unlike a full-size bincount
        self._counter += len(leaves)
        if self._counter == self.window_size:
            self._rollover()

    def _leaves(self, X: np.ndarray) -> np.ndarray:
        """Flat leaf id reached by every row in every tree, shape (n, n_trees).

        All rows and trees move down one level per step; ``value < threshold`` goes left,
        anything else (including NaN) right, exactly River's comparison. Buffers are reused
        and ``mode="clip"`` skips bounds checks: ids are valid by construction.
        """
        n, n_trees = len(X), self.n_trees
        node = np.tile(self._roots, (n, 1))
        rows = np.arange(n, dtype=np.intp) * self._n_features
        row_base = np.repeat(rows, n_trees).reshape(n, n_trees)
        flat_x = X.ravel()
        index = np.empty_like(node)
        values = np.empty(node.shape, dtype=np.float64)
        split = np.empty(node.shape, dtype=np.float64)
        left = np.empty(node.shape, dtype=bool)
        for level in range(self.height):
            np.take(self._feat, node, out=index, mode="clip")
            index += row_base
            np.take(flat_x, index, out=values, mode="clip")
            np.take(self._thr, node, out=split, mode="clip")
            np.less(values, split, out=left)
            np.take(self._right, node, out=index, mode="clip")
            node, index = index, node
            node -= left if level < self.height - 1 else left * self._last_stride
        return node

    def _scores(self, leaves: np.ndarray) -> np.ndarray:
        if self._first_window:
            return np.zeros(len(leaves), dtype=np.float64)
        total = self._leaf_score.take(leaves).sum(axis=1)
        return 1.0 - total / float(self._max_score)

    def _check_X(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self._n_features:
            raise ValueError(
                f"X must have shape (n, {self._n_features}) with columns {list(self._columns)}, "
                f"got shape {X.shape}"
            )
        return X

    @staticmethod
    def _check_mask(mask: np.ndarray | None, n: int) -> np.ndarray | None:
        if mask is None:
            return None
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"mask must have shape ({n},), got {mask.shape}")
        return mask

    # ---------------------------------------------------------------------- rollover

    def _rollover(self) -> None:
        """River's pivot (r_mass = l_mass, l_mass = 0 on every node), as array operations,
        plus the per-leaf score table the next window's scores are read from."""
        counts = self._counts.reshape(self.n_trees, self._n_leaves)
        self._r_mass = _level_sums(counts, self.height)
        self._leaf_score = _leaf_scores(self._r_mass, self.height, self._size_limit)
        self._py_leaf_score = None
        self._counts.fill(0)
        self._counter = 0
        self._first_window = False


# -------------------------------------------------------------------------- helpers


def _validate(
    features: Sequence[str],
    n_trees: int,
    height: int,
    window_size: int,
    limits: dict[str, tuple[float, float]] | None,
) -> None:
    if isinstance(features, str) or len(features) == 0:
        raise ValueError(f"features must be a non-empty sequence of names, got {features!r}")
    if len(set(features)) != len(features):
        raise ValueError(f"features must be unique, got {list(features)!r}")
    for name, value in (("n_trees", n_trees), ("height", height), ("window_size", window_size)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    for name, bounds in (limits or {}).items():
        if name not in features:
            raise ValueError(f"limits has feature {name!r}, which is not in features")
        if not _valid_bounds(bounds):
            raise ValueError(f"limits[{name!r}] must be finite with low < high, got {bounds!r}")


def _valid_bounds(bounds: Any) -> bool:
    """A (low, high) pair of finite numbers with low < high."""
    try:
        low, high = bounds
        return bool(np.isfinite(low) and np.isfinite(high) and low < high)
    except (TypeError, ValueError):
        return False


def _grow_forest(
    features: Sequence[str],
    n_trees: int,
    height: int,
    limits: Mapping[str, tuple[float, float]],
    seed: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split column and threshold of every internal node, flat: tree t, heap node i at
    ``t * (2**height - 1) + i``. River grows trees over ``sorted(x)`` with one shared rng."""
    rng = random.Random(seed)
    column = {name: i for i, name in enumerate(features)}
    n_internal = 2**height - 1
    feat = np.zeros(n_trees * n_internal, dtype=np.intp)
    thr = np.zeros(n_trees * n_internal, dtype=np.float64)
    heap = _preorder_heap(height)
    for t in range(n_trees):
        bounds = {name: limits.get(name, DEFAULT_LIMITS) for name in sorted(features)}
        names: list[str] = []
        values: list[float] = []
        _grow(rng, bounds, height, 0, names, values)
        slots = t * n_internal + heap
        feat[slots] = [column[name] for name in names]
        thr[slots] = values
    return feat, thr


def _grow(
    rng: random.Random,
    bounds: dict[str, tuple[float, float]],
    height: int,
    depth: int,
    names: list[str],
    values: list[float],
) -> None:
    """River's make_padded_tree, same rng calls in the same (pre)order, recording splits."""
    if depth == height:
        return
    on = rng.choices(
        population=list(bounds.keys()),
        weights=[bounds[i][1] - bounds[i][0] for i in bounds],
    )[0]
    a = bounds[on][0]
    b = bounds[on][1]
    at = rng.uniform(a + PADDING * (b - a), b - PADDING * (b - a))
    names.append(on)
    values.append(at)
    saved = bounds[on]
    bounds[on] = (saved[0], at)
    _grow(rng, bounds, height, depth + 1, names, values)
    bounds[on] = (at, saved[1])
    _grow(rng, bounds, height, depth + 1, names, values)
    bounds[on] = saved


def _preorder_heap(height: int) -> np.ndarray:
    """Heap index (children of i are 2i+1, 2i+2) of internal nodes in preorder."""
    order: list[int] = []
    stack = [0]
    n_internal = 2**height - 1
    while stack:
        i = stack.pop()
        if i < n_internal:
            order.append(i)
            stack += [2 * i + 2, 2 * i + 1]
    return np.array(order, dtype=np.intp)


def _right_children(n_trees: int, height: int) -> np.ndarray:
    """Flat id of each internal node's right child.

    Internal children are heap nodes of the same tree (left = right - 1). Children of the
    last internal level are leaf ids ``t * 2**height + q`` in bit-reversed order, where the
    left leaf is ``right - 2**(height-1)``; a walk of ``height`` steps ends on the leaf id.
    """
    n_internal, n_leaves, stride = 2**height - 1, 2**height, 2 ** (height - 1)
    heap = np.arange(n_internal)
    right_heap = 2 * heap + 2
    trees = np.arange(n_trees)[:, None]
    inner = trees * n_internal + right_heap
    last = _bit_reverse(np.clip(heap - (stride - 1), 0, None), height - 1)
    to_leaf = trees * n_leaves + last + stride
    return np.where(right_heap >= n_internal, to_leaf, inner).astype(np.intp).ravel()


def _bit_reverse(values: np.ndarray, bits: int) -> np.ndarray:
    """Reverse the low ``bits`` bits: heap position within a level <-> storage position."""
    out = np.zeros_like(values)
    for b in range(bits):
        out |= ((values >> b) & 1) << (bits - 1 - b)
    return out


def _heap_to_level_order(height: int) -> np.ndarray:
    """For each heap index, its column in the level-by-level bit-reversed mass layout."""
    parts = [2**d - 1 + _bit_reverse(np.arange(2**d), d) for d in range(height + 1)]
    return np.concatenate(parts)


def _level_sums(leaf_counts: np.ndarray, height: int) -> np.ndarray:
    """Masses of all nodes, (n_trees, 2**(height+1)-1) in level order, from leaf counts:
    a node's mass is the sum of its leaves', and its children are its level's two halves."""
    n_trees = leaf_counts.shape[0]
    out = np.empty((n_trees, 2 ** (height + 1) - 1), dtype=np.int64)
    out[:, 2**height - 1 :] = leaf_counts
    for depth in range(height - 1, -1, -1):
        width = 2**depth
        children = out[:, 2 * width - 1 : 4 * width - 1]
        np.add(children[:, :width], children[:, width:], out=out[:, width - 1 : 2 * width - 1])
    return out


def _leaf_scores(masses: np.ndarray, height: int, size_limit: float) -> np.ndarray:
    """River's per-tree score for a walk ending at each leaf, flat (n_trees * 2**height).

    River adds ``r_mass * 2**depth`` at each node and stops after the first node whose
    ``r_mass < size_limit``. Masses only shrink going down (a node's mass is the sum of its
    children's), so a node is added exactly when its parent's mass is >= ``size_limit``.
    Walks usually stop a few levels down; below the deepest live parent every leaf just
    inherits its ancestor's score, which in bit-reversed order is a ``tile``.
    """
    n_trees = len(masses)
    acc = masses[:, :1].copy()
    for depth in range(1, height + 1):
        width = 2 ** (depth - 1)
        live = masses[:, width - 1 : 2 * width - 1] >= size_limit
        if not live.any():
            break
        level = masses[:, 2 * width - 1 : 4 * width - 1].reshape(n_trees, 2, width)
        nxt = np.left_shift(level, depth)
        nxt *= live[:, None, :]
        nxt += acc[:, None, :]
        acc = nxt.reshape(n_trees, -1)
    return np.tile(acc, (1, 2**height // acc.shape[1])).ravel()
