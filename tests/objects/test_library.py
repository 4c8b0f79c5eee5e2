"""Environment invariants of the coordinate-level Object Library."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from structattn.objects import DIRECTIONS, ObjectLibrary, library_step, move_direction


@pytest.mark.parametrize("N,K,tr,ev", [(5, 3, 6, 4), (10, 3, 6, 5), (20, 3, 16, 8)])
def test_splits_disjoint_and_cover(N, K, tr, ev):
    env = ObjectLibrary(N, K, num_train_scenes=tr, num_eval_scenes=ev, seed=0)
    train, evl = env.scenes("train"), env.scenes("eval")
    assert len(train) == tr and len(evl) == ev
    assert set(train).isdisjoint(evl)
    assert len(set(train)) == tr and len(set(evl)) == ev
    assert set().union(*train) == set(range(N))  # every object seen in training
    for s in (*train, *evl):
        assert len(s) == K and list(s) == sorted(set(s)) and 0 <= s[0] and s[-1] < N


def test_n_equals_k_single_shared_scene():
    env = ObjectLibrary(4, 4, num_train_scenes=1, num_eval_scenes=1, seed=0)
    assert env.scenes("train") == env.scenes("eval") == ((0, 1, 2, 3),)


def test_constructor_errors():
    with pytest.raises(ValueError, match="every object appears"):
        ObjectLibrary(10, 3, num_train_scenes=3, num_eval_scenes=1, seed=0)
    with pytest.raises(ValueError, match="possible scenes"):
        ObjectLibrary(5, 3, num_train_scenes=8, num_eval_scenes=3, seed=0)
    with pytest.raises(ValueError, match="variant"):
        ObjectLibrary(5, 3, num_train_scenes=3, num_eval_scenes=1, variant="all", seed=0)
    with pytest.raises(TypeError, match="seed"):
        ObjectLibrary(5, 3, num_train_scenes=3, num_eval_scenes=1, seed=None)
    with pytest.raises(ValueError, match="scene_size"):
        ObjectLibrary(3, 4, num_train_scenes=3, num_eval_scenes=1, seed=0)


def test_reset_positions_and_reproducibility():
    a = ObjectLibrary(8, 3, num_train_scenes=5, num_eval_scenes=3, seed=7)
    b = ObjectLibrary(8, 3, num_train_scenes=5, num_eval_scenes=3, seed=7)
    ta, tb = a.rollout(20, 6), b.rollout(20, 6)
    for f in ("scenes", "positions", "actions", "moved"):
        np.testing.assert_array_equal(getattr(ta, f), getattr(tb, f))
    c = ObjectLibrary(8, 3, num_train_scenes=5, num_eval_scenes=3, seed=8).rollout(20, 6)
    assert not np.array_equal(c.positions, ta.positions)
    for e in range(20):
        assert tuple(ta.scenes[e]) in a.scenes("train")
        for t in range(7):
            pos = ta.positions[e, t]
            present = pos[:, 0] >= 0
            assert present.sum() == 3 and set(np.flatnonzero(present)) == set(ta.scenes[e])
            cells = {tuple(p) for p in pos[present]}
            assert len(cells) == 3  # no two objects share a cell
            assert np.all((pos[present] >= 0) & (pos[present] < 5))
        assert set(ta.actions[e] // 4) <= set(ta.scenes[e])
    # the 0.9 move filter: most transitions move
    assert ta.moved.mean() > 0.8
    ev = a.rollout(10, 2, split="eval")
    assert all(tuple(s) in a.scenes("eval") for s in ev.scenes)


def test_step_moves_and_noops():
    pos = np.full((4, 2), -1)
    pos[0], pos[2] = (0, 0), (0, 1)
    new, moved = library_step(pos, 0 * 4 + 0)  # north off the grid: no-op
    assert not moved and np.array_equal(new, pos)
    new, moved = library_step(pos, 0 * 4 + 1)  # east into object 2: no-op (collision)
    assert not moved and np.array_equal(new, pos)
    new, moved = library_step(pos, 0 * 4 + 2)  # south: moves
    assert moved and tuple(new[0]) == (1, 0) and np.array_equal(new[1:], pos[1:])
    new, moved = library_step(pos, 2 * 4 + 1, grid=(1, 2))  # east off a 1x2 grid
    assert not moved
    with pytest.raises(ValueError, match="not present"):
        library_step(pos, 1 * 4 + 0)
    with pytest.raises(ValueError, match="action must be in"):
        library_step(pos, 16)


def test_env_step_matches_pure_dynamics():
    env = ObjectLibrary(6, 3, num_train_scenes=4, num_eval_scenes=2, seed=3)
    s = env.reset()
    for _ in range(30):
        a = env.sample_action()
        ref, ref_moved = library_step(s, a)
        s, moved = env.step(a)
        assert moved == ref_moved and np.array_equal(s, ref)


def test_rush_hour_direction_table():
    for lib_id, a in itertools.product(range(9), range(4)):
        assert move_direction(lib_id, a, "shapes") == a
        assert move_direction(lib_id, a, "rush_hour") == (a - lib_id % 4) % 4
        # the authors' table: np.roll(np.arange(4), shift=lib_id % 4)[a]
        assert move_direction(lib_id, a, "rush_hour") == np.roll(np.arange(4), lib_id % 4)[a]
    pos = np.full((6, 2), -1)
    pos[5] = (2, 2)  # object 5 faces 1: action 1 ("up" relative) is absolute north
    new, _ = library_step(pos, 5 * 4 + 1, variant="rush_hour")
    assert tuple(new[5]) == tuple(np.array([2, 2]) + DIRECTIONS[0])


def _relabel(pos, action, sigma):
    out = np.full_like(pos, -1)
    out[sigma] = pos  # object i becomes sigma[i]
    return out, int(sigma[action // 4]) * 4 + action % 4


@pytest.mark.parametrize("variant", ["shapes", "rush_hour"])
def test_true_dynamics_relabelling_equivariance(variant):
    N = 12
    rng = np.random.default_rng(0)
    env = ObjectLibrary(N, 4, num_train_scenes=6, num_eval_scenes=4, variant=variant, seed=1)
    traj = env.rollout(15, 8)
    for _ in range(5):
        if variant == "shapes":
            sigma = rng.permutation(N)
        else:  # σ must preserve the heading lib_id mod 4
            sigma = np.arange(N)
            for r in range(4):
                cls = np.arange(r, N, 4)
                sigma[cls] = rng.permutation(cls)
        for e, t in itertools.product(range(15), range(8)):
            s, a = traj.positions[e, t], int(traj.actions[e, t])
            next_s, moved = library_step(s, a, variant=variant)
            ss, sa = _relabel(s, a, sigma)
            next_ss, moved_s = library_step(ss, sa, variant=variant)
            assert moved_s == moved
            np.testing.assert_array_equal(next_ss, _relabel(next_s, a, sigma)[0])


def test_rush_hour_needs_heading_preserving_relabelling():
    # relabelling 0 <-> 1 (different headings) does not commute with the dynamics
    pos = np.full((4, 2), -1)
    pos[0] = (2, 2)
    nxt, _ = library_step(pos, 0 * 4 + 0, variant="rush_hour")
    sigma = np.array([1, 0, 2, 3])
    ss, sa = _relabel(pos, 0, sigma)
    assert not np.array_equal(library_step(ss, sa, variant="rush_hour")[0],
                              _relabel(nxt, 0, sigma)[0])


def test_scene_count_bound():
    assert math.comb(5, 3) == 10
    env = ObjectLibrary(5, 3, num_train_scenes=7, num_eval_scenes=3, seed=2)
    assert len(set(env.scenes("train")) | set(env.scenes("eval"))) == 10
