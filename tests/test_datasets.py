import os

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.core import EnvSpec
from replay import datasets as D

HOPPER = EnvSpec(env_id="gym:Hopper-v5", obs_dim=11, action_dim=3, max_episode_steps=1000, action_repeat=1,
                 can_terminate=True)

# (length, how it ends): terminal / timeout / cut (observation chain breaks, no flag) /
# chained-terminal (terminal whose next obs happens to equal the next episode's first obs) / open (data ends)
EPISODES = [(5, "terminal"), (4, "timeout"), (6, "cut"), (3, "chained-terminal"), (2, "terminal"), (7, "open")]


def make_arrays(episodes=EPISODES, obs_dim=2, act_dim=1):
    """obs = [episode + 1, t, 0...]; next obs continues the count inside an episode."""
    obs, nxt, act, rew, term, tout, label = [], [], [], [], [], [], []
    for e, (length, end) in enumerate(episodes):
        for t in range(length):
            o = np.zeros(obs_dim, np.float32)
            o[:2] = (e + 1, t)
            n = o.copy()
            n[1] = t + 1
            last = t == length - 1
            if last and end == "chained-terminal":
                n[:2] = (e + 2, 0)   # the next episode's first obs: only the terminal flag splits here
            obs.append(o)
            nxt.append(n)
            act.append(np.full(act_dim, 0.1 * e, np.float32))
            rew.append(1.0 * e + 0.01 * t)
            term.append(last and end in ("terminal", "chained-terminal"))
            tout.append(last and end == "timeout")
            label.append(e)
    arrays = dict(observations=np.array(obs), next_observations=np.array(nxt), actions=np.array(act),
                  rewards=np.array(rew, np.float32), terminals=np.array(term), timeouts=np.array(tout))
    return arrays, np.array(label)


META = dict(env_id="gym:Hopper-v5", policy="sac-medium", seed=3, steps=27, code_version="abc123",
            ref_min_score=-20.0, ref_max_score=3234.3)


def hopper_arrays(n=20, obs_dim=11, act_dim=3):
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n + 1, obs_dim)).astype(np.float32)
    term = np.zeros(n, bool)
    tout = np.zeros(n, bool)
    tout[-1] = True
    return dict(observations=obs[:-1], next_observations=obs[1:], actions=rng.uniform(-1, 1, (n, act_dim)),
                rewards=rng.normal(size=n), terminals=term, timeouts=tout)


def raw_file(path, arrays, attrs=None):
    """A file made with h5py directly (no validation), for the bad-input tests."""
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return path


# ---------------------------------------------------------------- round trip


def test_write_then_load_round_trips_arrays_and_metadata(tmp_path):
    arrays = hopper_arrays()
    arrays["infos"] = {"qpos": np.arange(20 * 6, dtype=np.float64).reshape(20, 6)}
    path = tmp_path / "hopper-medium.hdf5"
    D.write(path, arrays, {**META, "note": "synthetic", "tags": ("a", "bc"), "sizes": (1, 2)})
    assert sorted(os.listdir(tmp_path)) == ["hopper-medium.hdf5"]   # no .tmp left behind

    with h5py.File(path, "r") as f:   # the on-disk layout is D4RL's
        assert set(f.keys()) == set(D.REQUIRED_KEYS) | {"infos"}
        assert f["terminals"].dtype == bool and f["observations"].dtype == np.float32
        assert f.attrs["ref_max_score"] == 3234.3 and f.attrs["env_id"] == "gym:Hopper-v5"

    ds = D.load(path, spec=HOPPER)
    assert ds.num_transitions == 20 and ds.obs_dim == 11 and ds.action_dim == 3
    for key in D.REQUIRED_KEYS:
        np.testing.assert_allclose(np.asarray(getattr(ds, key)), np.asarray(arrays[key], np.float32))
    np.testing.assert_array_equal(np.asarray(ds.infos["qpos"]), np.asarray(arrays["infos"]["qpos"], np.float32))
    m = ds.metadata
    assert (m.env_id, m.policy, m.seed, m.steps, m.code_version) == ("gym:Hopper-v5", "sac-medium", 3, 27, "abc123")
    assert (m.ref_min_score, m.ref_max_score) == (-20.0, 3234.3)
    assert m.extra == (("note", "synthetic"), ("sizes", (1, 2)), ("tags", ("a", "bc"))) and m.source == str(path)

    # a loaded dataset writes back identically
    D.write(tmp_path / "copy.hdf5", ds)
    again = D.load(tmp_path / "copy.hdf5")
    assert again.metadata == D.DatasetMetadata(**{**vars(m), "source": str(tmp_path / "copy.hdf5")})
    np.testing.assert_array_equal(np.asarray(again.observations), np.asarray(ds.observations))


def test_metadata_group_and_missing_timeouts_are_accepted(tmp_path):
    arrays, _ = make_arrays()
    arrays.pop("timeouts")
    path = raw_file(tmp_path / "old-d4rl.hdf5", arrays)
    with h5py.File(path, "a") as f:
        f.create_dataset("metadata/algorithm", data="SAC")
        f["metadata"].attrs["ref_min_score"] = 1.0
    ds = D.load(path)
    assert ds.metadata.policy == "SAC" and ds.metadata.ref_min_score == 1.0
    assert float(ds.timeouts.sum()) == 0.0
    # the timeout end of episode 1 is still found from the observation chain
    np.testing.assert_array_equal(D.episode_lengths(ds), [5, 4, 6, 3, 2, 7])


# ---------------------------------------------------------------- bad inputs


def _bad(tmp_path, name, mutate, attrs=None):
    arrays = hopper_arrays()
    mutate(arrays)
    return raw_file(tmp_path / name, arrays, attrs)


def _set(key, index, value):
    def mutate(arrays):
        arrays[key] = np.array(arrays[key], dtype=np.float64 if key != "terminals" else bool)
        arrays[key][index] = value
    return mutate


BAD_FILES = {
    "missing key": (lambda a: a.pop("rewards"), ["'rewards'", "required keys", "next_observations"]),
    "mismatched lengths": (lambda a: a.update(actions=a["actions"][:19]), ["lengths differ", "actions 19",
                                                                           "observations 20"]),
    "nan at index 7": (_set("observations", (7, 2), np.nan), ["'observations'", "nan", "index 7"]),
    "inf reward": (_set("rewards", 4, np.inf), ["'rewards'", "inf", "index 4"]),
    "string dtype": (lambda a: a.update(rewards=np.array(["x"] * 20, dtype="S1")), ["'rewards'", "dtype"]),
    "wrong rank": (lambda a: a.update(rewards=np.zeros((20, 2))), ["'rewards'", "rank 2"]),
    "flags not binary": (lambda a: a.update(terminals=np.full(20, 2.0)), ["'terminals'", "0/1"]),
    "terminal and timeout": (lambda a: (a["terminals"].__setitem__(19, True)), ["step 19",
                                                                                "both terminal and timeout"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_contents_name_the_file_and_the_problem(tmp_path, case):
    mutate, expected = BAD_FILES[case]
    path = _bad(tmp_path, f"bad-{case.replace(' ', '_')}.hdf5", mutate)
    with pytest.raises(D.DatasetError) as info:
        D.load(path)
    message = str(info.value)
    assert str(path) in message
    for part in expected:
        assert part in message, (part, message)


def test_missing_file(tmp_path):
    with pytest.raises(D.DatasetError, match="nowhere.hdf5.*does not exist"):
        D.load(tmp_path / "nowhere.hdf5")


def test_truncated_file(tmp_path):
    path = D.write(tmp_path / "cut.hdf5", hopper_arrays(200), META)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(D.DatasetError, match=r"cut\.hdf5.*not a readable HDF5 file"):
        D.load(path)


def test_text_file_renamed_hdf5(tmp_path):
    path = tmp_path / "notes.hdf5"
    path.write_text("observations,actions\n1,2\n")
    with pytest.raises(D.DatasetError, match=r"notes\.hdf5.*not a readable HDF5 file"):
        D.load(path)


def test_observation_size_against_the_env_spec(tmp_path):
    path = D.write(tmp_path / "walker.hdf5", hopper_arrays(obs_dim=17, act_dim=6), {})
    with pytest.raises(D.DatasetError) as info:
        D.load(path, spec=HOPPER)
    assert str(info.value) == f"dataset {path}: has observations of size 17, env gym:Hopper-v5 expects 11"
    path = D.write(tmp_path / "actions.hdf5", hopper_arrays(act_dim=6), {})
    with pytest.raises(D.DatasetError, match="actions of size 6, env gym:Hopper-v5 expects 3"):
        D.load(path, spec=HOPPER)


def test_recorded_env_id_must_match_the_requested_one(tmp_path):
    path = D.write(tmp_path / "w.hdf5", hopper_arrays(), {**META, "env_id": "gym:Walker2d-v5"})
    for kwargs in (dict(env_id="gym:Hopper-v5"), dict(spec=HOPPER)):
        with pytest.raises(D.DatasetError, match=r"w\.hdf5.*'gym:Walker2d-v5'.*'gym:Hopper-v5'"):
            D.load(path, **kwargs)
    D.load(path, env_id="Walker2d-v5")               # a bare gymnasium id names the same env
    D.load(D.write(tmp_path / "anon.hdf5", hopper_arrays(), {}), env_id="gym:Hopper-v5")   # nothing recorded


def test_directory_needs_minari(tmp_path):
    pytest.importorskip("h5py")
    try:
        import minari  # noqa: F401
        pytest.skip("minari is installed")
    except ImportError:
        pass
    with pytest.raises(D.DatasetError, match="pip install minari"):
        D.load(tmp_path)


def test_writer_validates_first_and_leaves_nothing_behind(tmp_path):
    bad = hopper_arrays()
    bad["observations"][7, 0] = np.nan
    path = tmp_path / "out.hdf5"
    with pytest.raises(D.DatasetError, match=r"out\.hdf5.*'observations' holds nan at index 7"):
        D.write(path, bad, META)
    assert os.listdir(tmp_path) == []
    # an existing good file is left untouched by a failed write
    D.write(path, hopper_arrays(), META)
    before = path.read_bytes()
    with pytest.raises(D.DatasetError, match="missing required key 'timeouts'"):
        D.write(path, {k: v for k, v in hopper_arrays().items() if k != "timeouts"}, META)
    with pytest.raises(D.DatasetError, match="observations of size 11, env gym:Walker2d-v5 expects 17"):
        D.write(path, hopper_arrays(), {}, spec=EnvSpec("gym:Walker2d-v5", 17, 6, 1000, 1, True))
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["out.hdf5"]


# ---------------------------------------------------------------- scores


def test_normalized_score_by_hand(tmp_path):
    assert D.normalized_score(40.0, -10.0, 90.0) == pytest.approx(50.0)
    np.testing.assert_allclose(D.normalized_score([-10.0, 90.0, 140.0], -10.0, 90.0), [0.0, 100.0, 150.0])
    assert float(D.normalized_score(jnp.array(15.0), 10.0, 20.0)) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="equal"):
        D.normalized_score(1.0, 5.0, 5.0)
    ds = D.load(D.write(tmp_path / "h.hdf5", hopper_arrays(), META))
    assert D.reference_returns(ds) == (-20.0, 3234.3)
    assert D.dataset_normalized_score(ds, 3234.3) == pytest.approx(100.0)
    assert D.dataset_normalized_score(ds, (3234.3 - 20.0) / 2) == pytest.approx(50.0)
    bare = D.load(D.write(tmp_path / "bare.hdf5", hopper_arrays(), {}))
    with pytest.raises(D.DatasetError, match=r"bare\.hdf5.*ref_min_score"):
        D.reference_returns(bare)


# ---------------------------------------------------------------- episodes and windows


def test_episode_structure():
    arrays, label = make_arrays()
    ds = D.from_arrays(arrays)
    np.testing.assert_array_equal(D.episode_starts(ds), [0, 5, 9, 15, 18, 20])
    np.testing.assert_array_equal(D.episode_ends(ds), [4, 8, 14, 17, 19, 26])
    np.testing.assert_array_equal(D.episode_lengths(ds), [length for length, _ in EPISODES])
    np.testing.assert_allclose(D.episode_returns(ds), np.bincount(label, weights=arrays["rewards"]))


@pytest.mark.parametrize("allow_terminal", [True, False])
def test_sequence_starts_never_cross_an_episode_end(allow_terminal):
    arrays, label = make_arrays()
    ds = D.from_arrays(arrays)
    n = len(label)
    ends_terminal = {e: end in ("terminal", "chained-terminal") for e, (_, end) in enumerate(EPISODES)}
    sequences_at = jax.jit(D.sequences_at, static_argnums=2)
    for length in range(1, 9):
        starts = np.asarray(D.sequence_starts(ds, length, allow_terminal=allow_terminal))
        expected = [i for i in range(n)
                    if (i + length <= n and (label[i:i + length] == label[i]).all())
                    or (allow_terminal and ends_terminal[label[i]])]
        np.testing.assert_array_equal(starts, expected)
        batch = sequences_at(ds, jnp.asarray(starts), length)
        obs, nxt, mask, reward = (np.asarray(x) for x in (batch.obs, batch.next_obs, batch.mask, batch.reward))
        for row, start in enumerate(starts):
            for t in range(length):
                if mask[row, t]:   # unmasked steps: same episode, consecutive in time
                    assert obs[row, t, 0] == label[start] + 1 and obs[row, t, 1] == obs[row, 0, 1] + t
                    assert start + t < n and (t == 0 or (obs[row, t] == nxt[row, t - 1]).all())
                else:              # padding after a terminal: zeros, never the next episode
                    assert ends_terminal[label[start]]
                    assert not obs[row, t].any() and not nxt[row, t].any() and reward[row, t] == 0
    # the short terminated episode (2 steps at index 18) gives a masked window of 5; the short
    # timeout episode (4 steps at 5) gives none
    starts5 = np.asarray(D.sequence_starts(ds, 5))
    assert 18 in starts5 and 5 not in starts5
    row = sequences_at(ds, jnp.array([18]), 5)
    np.testing.assert_array_equal(np.asarray(row.mask)[0], [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(np.asarray(row.terminated)[0], [0, 1, 0, 0, 0])


def test_sampling_jits_and_vmaps_over_keys():
    arrays, label = make_arrays()
    ds = D.from_arrays(arrays, {"env_id": "jax:PointMass"})
    keys = jax.random.split(jax.random.PRNGKey(0), 2)

    sample = jax.jit(jax.vmap(D.sample, in_axes=(None, 0, None)), static_argnums=2)
    batch = sample(ds, keys, 16)
    assert batch.obs.shape == (2, 16, 2) and batch.action.shape == (2, 16, 1) and batch.terminated.shape == (2, 16)
    assert not np.array_equal(np.asarray(batch.obs[0]), np.asarray(batch.obs[1]))
    single = jax.jit(D.sample, static_argnums=2)(ds, keys[1], 16)
    np.testing.assert_array_equal(np.asarray(single.obs), np.asarray(batch.obs[1]))
    # each sampled transition is a real row: reward matches its (episode, t)
    e, t = np.asarray(batch.obs[..., 0]) - 1, np.asarray(batch.obs[..., 1])
    np.testing.assert_allclose(np.asarray(batch.reward), e + 0.01 * t, rtol=1e-6)

    starts = D.sequence_starts(ds, 4)
    seq = jax.jit(jax.vmap(lambda d, k, s: D.sample_sequences(d, k, 8, 4, s), in_axes=(None, 0, None)))
    out = seq(ds, keys, starts)
    assert out.obs.shape == (2, 8, 4, 2) and out.mask.shape == (2, 8, 4) and out.reward.shape == (2, 8, 4)
    first = np.asarray(out.obs[:, :, 0])
    host_obs = np.asarray(ds.observations)
    start_index = {tuple(host_obs[i]): i for i in np.asarray(starts)}
    assert all(tuple(o) in start_index for o in first.reshape(-1, 2))
    one = jax.jit(D.sample_sequences, static_argnums=(2, 3))(ds, keys[0], 8, 4, starts)
    np.testing.assert_array_equal(np.asarray(one.obs), np.asarray(out.obs[0]))
    with pytest.raises(ValueError, match="no sequence starts"):
        D.sample_sequences(ds, keys[0], 8, 4, jnp.zeros((0,), jnp.int32))
