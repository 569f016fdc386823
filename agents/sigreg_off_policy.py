"""SIGReg as an add-on to off-policy agents: SAC's critics and MR.Q's state embedding pushed toward an isotropic
Gaussian, attached through the base agents' hooks (no field in agents/sac.py or agents/mrq.py).

"Stable Deep Reinforcement Learning via Isotropic Gaussian Representations" (arXiv 2602.19373) regularizes a
network's representation z with lambda * SIGReg(z) (networks/regularizers.py, the paper's RL variant: 16 fresh
directions per step). agents/sigreg.py is the paper's PPO agent; here the same term is added to

    sac_sigreg   SAC's critic loss,   z = each critic's last hidden pre-activation (mean of the critics' SIGReg)
                 (agents/sac.py `update(..., critic_penalty=...)`)
    mrq_sigreg   MR.Q's encoder loss, z = zs of the batch's first states (agents/mrq.py
                 `update(..., encoder_penalty=...)`)

    python experiments/run.py --agent sac_sigreg --env dmc:cartpole-swingup --sigreg-coef 0.2

`--sigreg-coef 0` builds the base agent's loss exactly (the add-on's own ablation); the coefficient is static,
because 0 skips the term.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from agents import mrq, sac
from agents.config import field, hyperparameters
from networks.regularizers import sigreg

SIGREG_COEF = field(0.0, ">= 0", static=True)      # static: 0 builds the base agent's loss (a Python branch)


@hyperparameters
class SACConfig(sac.Config):
    """SAC's hyperparameters and the weight of SIGReg on its critics."""

    sigreg_coef: float = SIGREG_COEF
    """Weight of SIGReg on each critic's last hidden pre-activation, added to the critic loss; 0 = SAC."""


@hyperparameters
class MRQConfig(mrq.Config):
    """MR.Q's hyperparameters and the weight of SIGReg on its state embedding."""

    sigreg_coef: float = SIGREG_COEF
    """Weight of SIGReg(zs) added to the encoder loss; 0 = MR.Q as published."""


def critic_penalty(state: sac.SACState, features: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
    """lambda x the mean over critics of SIGReg(z_j), z_j [B, width] (one key per critic)."""
    statistic = jnp.mean(jax.vmap(sigreg)(features, jax.random.split(key, features.shape[0])))
    return state.config.sigreg_coef * statistic, {"critic/sigreg": statistic}


def encoder_penalty(state: mrq.MRQState, zs: jax.Array, key: jax.Array) -> jax.Array:
    """lambda x SIGReg(zs)."""
    return state.config.sigreg_coef * sigreg(zs, key)


def sac_update(state, key, step):
    return sac.update(state, key, step, critic_penalty if state.config.sigreg_coef > 0 else None)


def mrq_update(state, key, step):
    return mrq.update(state, key, step, encoder_penalty if state.config.sigreg_coef > 0 else None)


SAC = dataclasses.replace(sac.AGENT, name="sac_sigreg", Config=SACConfig, update=sac_update)
MRQ = dataclasses.replace(mrq.AGENT, name="mrq_sigreg", Config=MRQConfig, update=mrq_update)
