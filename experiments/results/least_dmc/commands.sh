#!/bin/bash
# LEAST vs its base on dm_control, shared: 3 seeds, 30k agent steps (action repeat 2), learning_starts 5000,
# 64x64 actor and critic, eval every 2500 steps x 5 episodes.
cd /work/main && . .venv/bin/activate
COMMON="--num-seeds 3 --total-steps 30000 --learning-starts 5000 --eval-every 2500 --eval-episodes 5 --critic-hidden 64 64 --actor-hidden 64 64 --overwrite"
run() { name=$1; shift; echo "$(date +%T) start $name"; nice -n 5 python experiments/run.py "$@" $COMMON --run-dir /tmp/least_runs/$name > /tmp/least_runs/$name.log 2>&1; echo "$(date +%T) done $name rc=$?"; }
run cartpole-swingup_least-td3 --agent least --env dmc:cartpole-swingup
run cartpole-swingup_td3 --agent td3 --env dmc:cartpole-swingup
run walker-stand_least-td3 --agent least --env dmc:walker-stand
run walker-stand_td3 --agent td3 --env dmc:walker-stand
run cartpole-swingup_least-sac --agent least --base sac --critic-lr 1e-3 --env dmc:cartpole-swingup
run cartpole-swingup_sac --agent sac --env dmc:cartpole-swingup
