"""The Object Library environment of HOWM at the coordinate level (no rendering).

A library of ``N`` objects; a *scene* is a sorted ``K``-subset of it placed on a grid
(5 × 5 by default), one object per cell.  An action moves one present object one cell
north, east, south or west; a move off the grid or into an occupied cell is a no-op.
Scenes are split into *train* and *eval* compositions with no overlap, every library object
appearing in some training scene, so that evaluation on the eval split measures
compositional generalisation: known objects in unseen combinations.

Conventions follow the authors' ``envs/object_library_block_pushing.py`` and
``envs/block_pushing.py`` (zhao0625/HOWM):

* actions are stored **library-indexed**, ``lib_id · 4 + a`` with ``a ∈ {0, 1, 2, 3}``;
* directions ``[(-1, 0), (0, 1), (1, 0), (0, -1)]`` = N, E, S, W (row, column offsets);
* variant ``"shapes"`` (the code's ``"all"``): the direction is ``a``; variant
  ``"rush_hour"``: object ``i`` faces ``i mod 4`` and the direction is ``(a - i mod 4) mod 4``
  (actions relative to the heading);
* data collection redraws a no-op action with probability 0.9 until the object moves.

A state is held library-indexed: ``positions (N, 2)`` int64, ``-1`` rows for absent objects,
so relabelling the library by ``σ ∈ S_N`` is a row permutation.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np

from .._array import as_generator

__all__ = ["DIRECTIONS", "ObjectLibrary", "Trajectories", "library_step", "move_direction"]

#: Row/column offsets of the four moves: north, east, south, west.
DIRECTIONS = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)], dtype=np.int64)
_VARIANTS = ("shapes", "rush_hour")
_MAX_REDRAWS = 10_000


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_grid(grid: Any) -> tuple[int, int]:
    if not (isinstance(grid, (tuple, list)) and len(grid) == 2):
        raise ValueError(f"grid must be a (height, width) pair, got {grid!r}")
    return (_check_int(grid[0], "grid[0]", 1), _check_int(grid[1], "grid[1]", 1))


def _check_variant(variant: Any) -> str:
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
    return variant


def move_direction(lib_id: int, a: int, variant: str = "shapes") -> int:
    """Absolute direction (index into :data:`DIRECTIONS`) of action ``a`` on object ``lib_id``.

    ``"shapes"``: ``a``; ``"rush_hour"``: ``(a - lib_id mod 4) mod 4`` (the authors'
    ``np.roll(np.arange(4), shift=lib_id % 4)[a]``).
    """
    if _check_variant(variant) == "shapes":
        return int(a)
    return int((a - lib_id % 4) % 4)


def library_step(
    positions: Any, action: int, *, grid: tuple[int, int] = (5, 5), variant: str = "shapes"
) -> tuple[np.ndarray, bool]:
    """The true dynamics on a library-indexed state (a pure function).

    Parameters
    ----------
    positions : int array (N, 2)
        Cell ``(row, column)`` of each library object, ``(-1, -1)`` when absent.
    action : int
        Library-indexed action ``lib_id · 4 + a``; object ``lib_id`` must be present.
    grid : (int, int)
        Grid height and width.
    variant : {"shapes", "rush_hour"}
        Absolute or heading-relative directions (see :func:`move_direction`).

    Returns
    -------
    new_positions : int64 array (N, 2)
        A copy; unchanged when the move leaves the grid or hits another object.
    moved : bool
    """
    pos = np.array(positions, dtype=np.int64, copy=True)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"positions must have shape (N, 2), got {pos.shape}")
    n = pos.shape[0]
    action = _check_int(action, "action", 0)
    if action >= 4 * n:
        raise ValueError(f"action must be in [0, 4N) = [0, {4 * n}), got {action}")
    lib_id, a = divmod(action, 4)
    if pos[lib_id, 0] < 0:
        raise ValueError(f"action {action} moves library object {lib_id}, which is not present")
    H, W = _check_grid(grid)
    new = pos[lib_id] + DIRECTIONS[move_direction(lib_id, a, variant)]
    inside = 0 <= new[0] < H and 0 <= new[1] < W
    if not inside or bool(np.any(np.all(pos == new, axis=1))):
        return pos, False
    pos[lib_id] = new
    return pos, True


@dataclasses.dataclass(frozen=True)
class Trajectories:
    """Episodes collected from an :class:`ObjectLibrary`.

    Attributes
    ----------
    scenes : int64 array (E, K)
        Sorted library ids present in each episode.
    positions : int64 array (E, T + 1, N, 2)
        Library-indexed states, ``-1`` rows for absent objects.
    actions : int64 array (E, T)
        Library-indexed actions ``lib_id · 4 + a``.
    moved : bool array (E, T)
        Whether each action moved its object.
    """

    scenes: np.ndarray
    positions: np.ndarray
    actions: np.ndarray
    moved: np.ndarray


class ObjectLibrary:
    """HOWM's Object Library environment on coordinates, deterministic given ``seed``.

    Parameters
    ----------
    num_objects : int
        Library size ``N``.
    scene_size : int
        Objects per scene ``K ≤ N`` (and ``K ≤`` the number of grid cells).
    num_train_scenes, num_eval_scenes : int
        Number of distinct scene compositions in each split.  Needs
        ``num_train_scenes · K ≥ N`` (every object in some training scene) and, for
        ``N > K``, ``num_train_scenes + num_eval_scenes ≤ C(N, K)``.  With ``N = K`` there
        is a single scene, shared by both splits (as in the authors' code).
    grid : (int, int)
        Grid height and width.
    variant : {"shapes", "rush_hour"}
        Absolute or heading-relative action directions.
    seed : int, SeedSequence or Generator
        Drives the scene split, resets and action sampling.

    Notes
    -----
    The split draws distinct sorted ``K``-subsets, gives the first ``num_train_scenes`` to
    training and the rest to evaluation, and redraws until the training scenes cover the
    library (the authors' ``generate_config``).
    """

    def __init__(
        self,
        num_objects: int,
        scene_size: int,
        *,
        num_train_scenes: int,
        num_eval_scenes: int,
        grid: tuple[int, int] = (5, 5),
        variant: str = "shapes",
        seed: Any,
    ) -> None:
        self.num_objects = N = _check_int(num_objects, "num_objects", 1)
        self.scene_size = K = _check_int(scene_size, "scene_size", 1)
        self.grid = _check_grid(grid)
        self.variant = _check_variant(variant)
        n_train = _check_int(num_train_scenes, "num_train_scenes", 1)
        n_eval = _check_int(num_eval_scenes, "num_eval_scenes", 1)
        if K > N:
            raise ValueError(f"scene_size must be <= num_objects = {N}, got {K}")
        if K > self.grid[0] * self.grid[1]:
            raise ValueError(f"scene_size {K} exceeds the number of grid cells {self.grid}")
        if n_train * K < N:
            raise ValueError(
                f"num_train_scenes * scene_size must be >= num_objects so that every object "
                f"appears in training; got {n_train} * {K} < {N}"
            )
        if N > K and n_train + n_eval > math.comb(N, K):
            raise ValueError(
                f"num_train_scenes + num_eval_scenes = {n_train + n_eval} exceeds the "
                f"C({N}, {K}) = {math.comb(N, K)} possible scenes"
            )
        self._rng = as_generator(seed)
        self._train, self._eval = self._split(n_train, n_eval)
        self._scene: tuple[int, ...] | None = None
        self._positions: np.ndarray | None = None

    # ------------------------------------------------------------------ scenes
    def _draw_scene(self) -> tuple[int, ...]:
        ids = self._rng.choice(self.num_objects, size=self.scene_size, replace=False)
        return tuple(int(i) for i in np.sort(ids))

    def _split(self, n_train: int, n_eval: int) -> tuple[tuple, tuple]:
        if self.num_objects == self.scene_size:
            only = (tuple(range(self.num_objects)),)
            return only, only
        everything = set(range(self.num_objects))
        for _ in range(_MAX_REDRAWS):
            seen: dict[tuple[int, ...], None] = {}
            while len(seen) < n_train + n_eval:
                seen.setdefault(self._draw_scene())
            scenes = list(seen)
            train, ev = tuple(scenes[:n_train]), tuple(scenes[n_train:])
            if set().union(*train) == everything:
                return train, ev
        raise RuntimeError(  # pragma: no cover - needs a pathological configuration
            f"no split covering all {self.num_objects} objects in {_MAX_REDRAWS} draws; "
            "increase num_train_scenes"
        )

    def scenes(self, split: str = "train") -> tuple[tuple[int, ...], ...]:
        """The scene compositions of ``split`` (``"train"`` or ``"eval"``), sorted ids."""
        if split == "train":
            return self._train
        if split == "eval":
            return self._eval
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")

    # ------------------------------------------------------------------ dynamics
    @property
    def positions(self) -> np.ndarray:
        """The current library-indexed state ``(N, 2)`` (a copy)."""
        if self._positions is None:
            raise RuntimeError("call reset() before reading the state or stepping")
        return self._positions.copy()

    @property
    def scene(self) -> tuple[int, ...]:
        """Library ids present in the current episode."""
        if self._scene is None:
            raise RuntimeError("call reset() before reading the scene")
        return self._scene

    def reset(self, split: str = "train", *, scene: tuple[int, ...] | None = None) -> np.ndarray:
        """Start an episode: a scene of ``split`` (or the given one), uniform free cells.

        Returns
        -------
        int64 array (N, 2)
            The library-indexed state (``-1`` rows for absent objects).
        """
        choices = self.scenes(split)
        if scene is None:
            scene = choices[int(self._rng.integers(len(choices)))]
        else:
            scene = tuple(int(i) for i in scene)
            if scene not in choices:
                raise ValueError(f"scene {scene} is not a {split!r} scene; choose from {choices}")
        H, W = self.grid
        cells = self._rng.choice(H * W, size=self.scene_size, replace=False)
        pos = np.full((self.num_objects, 2), -1, dtype=np.int64)
        pos[list(scene), 0], pos[list(scene), 1] = np.divmod(cells, W)
        self._scene, self._positions = scene, pos
        return pos.copy()

    def step(self, action: int) -> tuple[np.ndarray, bool]:
        """Apply a library-indexed action ``lib_id · 4 + a`` to the current episode.

        Returns
        -------
        positions : int64 array (N, 2)
        moved : bool
            False for a no-op (wall or collision).
        """
        self._positions, moved = library_step(
            self.positions, action, grid=self.grid, variant=self.variant
        )
        return self._positions.copy(), moved

    def sample_action(self, *, filter_moving_prob: float = 0.9) -> int:
        """A uniform random library action ``lib_id · 4 + a`` on the current scene.

        With probability ``filter_moving_prob`` a no-op draw is redrawn until the object
        moves (the authors' data-collection rule).
        """
        if not 0.0 <= filter_moving_prob <= 1.0:
            raise ValueError(f"filter_moving_prob must be in [0, 1], got {filter_moving_prob!r}")
        scene = self.scene

        def draw() -> int:
            return scene[int(self._rng.integers(len(scene)))] * 4 + int(self._rng.integers(4))

        action = draw()
        if self._rng.random() < filter_moving_prob:
            for _ in range(_MAX_REDRAWS):
                if library_step(self.positions, action, grid=self.grid,
                                variant=self.variant)[1]:
                    break
                action = draw()
        return action

    def rollout(
        self,
        num_episodes: int,
        num_steps: int,
        *,
        split: str = "train",
        filter_moving_prob: float = 0.9,
    ) -> Trajectories:
        """Collect ``num_episodes`` random episodes of ``num_steps`` actions on ``split``.

        Returns
        -------
        Trajectories
        """
        E = _check_int(num_episodes, "num_episodes", 1)
        T = _check_int(num_steps, "num_steps", 1)
        scenes = np.zeros((E, self.scene_size), dtype=np.int64)
        positions = np.zeros((E, T + 1, self.num_objects, 2), dtype=np.int64)
        actions = np.zeros((E, T), dtype=np.int64)
        moved = np.zeros((E, T), dtype=bool)
        for e in range(E):
            positions[e, 0] = self.reset(split)
            scenes[e] = self.scene
            for t in range(T):
                actions[e, t] = self.sample_action(filter_moving_prob=filter_moving_prob)
                positions[e, t + 1], moved[e, t] = self.step(int(actions[e, t]))
        return Trajectories(scenes, positions, actions, moved)
