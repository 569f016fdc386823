"""Lanes sharded over devices (experiments/loops/sharding.py): on 4 simulated CPU devices the off-policy and
offline loops give the 1-device results, with their states really spread over the 4 devices.

One subprocess (XLA_FLAGS=--xla_force_host_platform_device_count=4) builds every loop whose test runs twice, on
1 device and on all 4, and records per check "ok" or its failure; the tests below read the record. Tiny configs, and XLA
told to compile fast (JAX_DISABLE_MOST_OPTIMIZATIONS=1, --xla_cpu_use_fusion_emitters=false: about a third
of the compile time; the same for both device counts, and the partitioning is unaffected), so that it takes about a
minute on a busy 2-core machine:

* SAC, device loop, jax:PointMass, 4 seeds: 16-wide networks, batch 16, updates from step 10, replay 500;
  2 chunks of 15 env steps, an evaluation (1 episode) and the diagnostics. The 4-device checkpoint after the
  first chunk resumes on 4 devices exactly, and on 1 device.
* The same SAC with 4 envs per seed (--num-envs 4: env states [seeds, 4, ...], 4 replay streams per seed):
  2 chunks of 16 env steps (4 loop steps), an evaluation and the diagnostics.
* MR.Q, device loop, jax:PointMass, 4 seeds: 16-wide, batch 16, 40 random steps, encoder and value horizons
  of 1 (each step of a horizon is traced again: 1 halves the compile); 2 chunks of 25 env steps.
* RAVL, offline loop, 4 seeds, on 300 random transitions of gym:InvertedPendulum-v5: 16-wide SAC with 2
  critics, a 3-member 8-wide dynamics ensemble fitted for 2 epochs once (the 4-device loop reloads it from
  the world directory), model rollouts every 2 steps; 2 chunks of 3 gradient steps and an evaluation (1
  episode in gymnasium). With --eta 0: EDAC's diversity term divides action-gradients by their norm, and a
  tiny ReLU critic's near-zero gradients turn float32 rounding into a 1e-3 relative gap in one lane's critic
  moments after 2 steps -- between 1 device and 4, and alike between 4 lanes and 2 on one device (eta 0
  stays within 1e-6 for 6 steps); the loop's part -- the replicated world, rollouts into sharded buffers,
  host evaluation -- is the same.
* SAC, host loop, gym:InvertedPendulum-v5, 4 seeds: as above, 2 chunks of 12 env steps.
* 6 lanes on 4 devices: placed on 3 devices, said in one line.

4 lanes vs 1 per device change how XLA tiles the batched matmuls: leaves agree to float32 rounding (rtol 1e-5,
atol 1e-6), not bit for bit; a resume on the same devices is exact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from experiments.loops.sharding import LanePlacement, lane_device_count, to_host
from tests.cli_utils import ROOT

SCRIPT = textwrap.dedent("""
    import json, sys, tempfile, traceback
    from pathlib import Path
    sys.path.insert(0, {root!r})
    import jax, numpy as np
    import agents
    from experiments import collect, memory
    from experiments.checkpoint import Checkpointer
    from experiments.loops.off_policy import DeviceLoop, HostLoop
    from experiments.loops.offline import OfflineLoop
    from experiments.loops.sharding import LanePlacement
    from tests.cli_utils import run_main

    assert len(jax.devices()) == 4
    ONE, ALL = jax.devices()[:1], None          # None: the loops' default, every device
    SAC = dict(batch_size=16, learning_starts=10, critic_hidden=(16, 16), actor_hidden=(16, 16), buffer_size=500)
    MRQ = dict(batch_size=16, enc_hidden_dim=16, zs_dim=16, zsa_dim=16, za_dim=8, value_hidden_dim=16,
               policy_hidden_dim=16, target_update_freq=10, random_steps=40, buffer_size=500, enc_horizon=1,
               q_horizon=1)
    RAVL = dict(batch_size=16, critic_hidden=(16, 16), actor_hidden=(16, 16), num_critics=2, rollout_batch=16,
                rollout_every=2, retain_rounds=2, model_members=3, model_elites=2, model_hidden=(8,),
                model_max_epochs=2, model_min_epochs=0, eta=0.0)
    tmp = Path(tempfile.mkdtemp())
    record = {{}}

    def check(name, fn):
        try:
            fn()
            record[name] = "ok"
        except Exception:
            record[name] = traceback.format_exc()[-3000:]

    def close(a, b, rtol=1e-5, atol=1e-6):
        a, b = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
        assert len(a) == len(b)
        for x, y in zip(a, b):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)

    def equal(a, b):
        for x, y in zip(jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    def sharded(tree, lanes):
        # Every array: axis 0 split over the 4 devices, lanes / 4 per device.
        for leaf in jax.tree.leaves(tree):
            assert len(leaf.sharding.device_set) == 4, leaf.sharding
            assert leaf.sharding.shard_shape(leaf.shape)[0] == lanes // 4, (leaf.shape, leaf.sharding)

    def train(loop, chunk, evaluate=True):
        state = loop.init()
        state, _ = loop.run(state, 0, chunk)
        state, metrics = loop.run(state, chunk, chunk)
        evaluation = loop.evaluate(state, 2 * chunk, 1).returns if evaluate else None
        return state, metrics, evaluation, loop.diagnostics(state, 2 * chunk)

    def compare(make, chunk, evaluate=True, rtol=1e-5, atol=1e-6):
        results = {{}}
        for name, devices in (("one", ONE), ("all", ALL)):
            loop = make(devices)
            results[name] = (loop, *train(loop, chunk, evaluate))
        (one, *expected), (loop, state, *got) = results["one"], results["all"]
        assert len(one.devices) == 1 and loop.devices == jax.devices(), loop.devices
        sharded({{k: v for k, v in state.items() if k in ("agent", "env", "tracker")}}, 4)
        sharded(loop.seed_keys, 4)
        close(expected[0], state, rtol, atol)
        for a, b in zip(expected[1:], got):
            close(a, b, rtol, atol)
        return one, loop

    def sac_device_loop():
        sac = agents.get("sac")
        make = lambda devices: DeviceLoop(sac, sac.Config(**SAC), "jax:PointMass", 4, 0, 500, devices=devices)
        one, loop = compare(make, 15)
        # The checkpoint of the 4-device run after one chunk: resumed there it is exact, resumed on 1 device
        # it matches too.
        state, _ = loop.run(loop.init(), 0, 15)
        checkpointer = Checkpointer(tmp / "checkpoints")
        checkpointer.save(15, state, {{"step": 15}})
        uninterrupted, _ = loop.run(state, 15, 15)
        restored, _, _ = checkpointer.restore(loop.init(), 15)
        sharded(restored["agent"], 4)
        equal(loop.run(restored, 15, 15)[0], uninterrupted)
        on_one, _, _ = checkpointer.restore(one.init(), 15)
        assert {{len(x.sharding.device_set) for x in jax.tree.leaves(on_one["agent"])}} == {{1}}
        close(one.run(on_one, 15, 15)[0], uninterrupted)

    def sac_device_loop_with_4_envs_per_seed():
        sac = agents.get("sac")
        make = lambda devices: DeviceLoop(sac, sac.Config(**SAC, num_envs=4), "jax:PointMass", 4, 0, 500,
                                          devices=devices)
        one, loop = compare(make, 16)
        assert loop.init()["env"].obs.shape[:2] == (4, 4)       # every seed's 4 envs, on the seed's device

    def mrq_device_loop():
        mrq = agents.get("mrq")
        compare(lambda devices: DeviceLoop(mrq, mrq.Config(**MRQ), "jax:PointMass", 4, 0, 500, devices=devices),
                25, evaluate=False)

    def ravl_offline_loop():
        data = tmp / "pendulum.hdf5"
        result = run_main(collect.main, "--env", "gym:InvertedPendulum-v5", "--policy", "random", "--steps", "300",
                          "--out", str(data), "--reference-episodes", "1", "--ref-expert", "1000")
        assert result.returncode == 0, result.stderr[-2000:]
        ravl = agents.get("ravl")
        make = lambda devices: OfflineLoop(ravl, ravl.Config(**RAVL), "gym:InvertedPendulum-v5", 4, 0, str(data),
                                           tmp / "world", devices=devices)
        one, loop = compare(make, 3)
        for leaf in jax.tree.leaves(loop.world):        # the world: one whole copy on each device
            assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4, leaf.sharding
        # The memory check counts the 4 devices, and a copy of the world on each.
        world_4, world_1 = loop.memory_estimate()["world"], one.memory_estimate()["world"]
        assert world_4 == 4 * world_1 > 0, (world_4, world_1)

    def sac_host_loop():
        sac = agents.get("sac")
        make = lambda devices: HostLoop(sac, sac.Config(**SAC), "gym:InvertedPendulum-v5", 4, 0, 500,
                                        devices=devices)
        compare(make, 12, evaluate=False)

    def six_lanes_on_three_devices():
        placement = LanePlacement(6)
        assert placement.devices == jax.devices()[:3]
        x = placement.put(np.arange(12.0).reshape(6, 2))
        assert len(x.sharding.device_set) == 3 and x.sharding.shard_shape(x.shape) == (2, 2)

    for name, fn in (("sac_device_loop", sac_device_loop),
                     ("sac_device_loop_with_4_envs_per_seed", sac_device_loop_with_4_envs_per_seed),
                     ("mrq_device_loop", mrq_device_loop),
                     ("ravl_offline_loop", ravl_offline_loop), ("sac_host_loop", sac_host_loop),
                     ("six_lanes_on_three_devices", six_lanes_on_three_devices)):
        if name in {selected!r}:
            check(name, fn)
    print("RECORD " + json.dumps(record))
""")


CHECKS = ["sac_device_loop", "sac_device_loop_with_4_envs_per_seed", "mrq_device_loop", "ravl_offline_loop",
          "sac_host_loop"]


def selected_checks(session) -> list[str]:
    """The checks whose tests this session runs (CI leaves out the `long` one, tests/conftest.py LONG_IN_CI), and
    the cheap 6-lanes placement check: the subprocess runs only those."""
    return [item.callspec.params["check"] for item in session.items
            if item.originalname == "test_four_devices_equal_one_device"] + ["six_lanes_on_three_devices"]


@pytest.fixture(scope="module")
def four_devices(request):
    """The record of the 4-device subprocess ({check: "ok" or its traceback}) and its stderr."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4 --xla_cpu_use_fusion_emitters=false"}
    script = SCRIPT.format(root=str(ROOT), selected=selected_checks(request.session))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=600, cwd=ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RECORD ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    return json.loads(lines[-1][len("RECORD "):]), result.stderr


@pytest.mark.parametrize("check", CHECKS)
def test_four_devices_equal_one_device(four_devices, check):
    record, _ = four_devices
    assert record[check] == "ok", record[check]


def test_lanes_the_devices_do_not_divide_go_to_fewer_devices_and_say_so(four_devices):
    record, stderr = four_devices
    assert record["six_lanes_on_three_devices"] == "ok", record["six_lanes_on_three_devices"]
    assert "devices: 6 lanes on 3 of 4 devices (2 each" in stderr, stderr[-2000:]


@pytest.mark.parametrize("lanes, devices, expected", [(8, 4, 4), (4, 4, 4), (6, 4, 3), (7, 4, 1), (2, 4, 2),
                                                      (1, 8, 1), (10, 8, 5), (5, 1, 1)])
def test_lane_device_count_is_the_largest_that_divides(lanes, devices, expected):
    assert lane_device_count(lanes, devices) == expected


def test_one_device_places_and_reads_back_lanes():
    """In this (1-device) process: a placement over every device, and `to_host` of what it placed."""
    import jax
    import numpy as np

    placement = LanePlacement(3)
    assert placement.devices == jax.devices()[:1]
    tree = {"a": np.arange(6.0).reshape(3, 2), "b": np.ones(3, np.int32)}
    placed = placement.put(tree)
    assert placed["a"].sharding == placement.lanes
    back = to_host(placed)
    assert isinstance(back["a"], np.ndarray) and np.array_equal(back["a"], tree["a"])
    world = placement.replicate(np.zeros(4))
    assert world.sharding.is_fully_replicated


def test_a_checkpoint_with_non_finite_agent_values_is_refused(tmp_path):
    """experiments/checkpoint.py checks a sharded agent state shard by shard."""
    import numpy as np

    from experiments.checkpoint import CheckpointError, Checkpointer

    placement = LanePlacement(2)
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    checkpointer.save(1, {"agent": placement.put({"w": np.array([[1.0], [np.nan]], np.float32)})}, {"step": 1})
    with pytest.raises(CheckpointError, match=r"non-finite values in \['w'\]"):
        checkpointer.restore({"agent": placement.put({"w": np.zeros((2, 1), np.float32)})}, 1)
