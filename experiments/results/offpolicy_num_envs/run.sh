#!/bin/sh
# Wall-clock to a return threshold with N envs per seed, FastTD3's regime (arXiv 2505.22642): SAC, then TD3, on
# mjx:CartpoleBalance, 2 seeds, N = 1, 16, 128, 1024, one run after another (the 2 cores to itself as far as the
# machine allows). Everything but N is the same in every run:
#   2 updates per loop step (--updates-per-step 2/N: the ratio counts env steps, as FastTD3's 2 updates per
#   step of its N envs), batch 256, networks 128x128, 5000 random env steps, the agents' CleanRL defaults
#   otherwise (buffer 1M transitions per seed, shared over the N streams);
#   the same budget in loop steps (LOOP_STEPS: N x that many env steps per seed), evaluated every 1000 loop steps
#   (4 deterministic episodes per seed) and logged every 500.
# Then summarize.py: training seconds (from train.csv's steps/s, evaluations left out) to the first evaluation
# whose mean return over the seeds reaches the threshold. wall_seconds.csv also keeps the machine's 1-minute load
# average at each run's start and end (other work on the machine slows a run).
#
#   sh experiments/results/offpolicy_num_envs/run.sh              # AGENTS="sac" NUMS="1 16" to run a part
set -eu
cd "$(dirname "$0")/../../.."
OUT=experiments/results/offpolicy_num_envs
LOOP_STEPS=${LOOP_STEPS:-20000}
[ -f $OUT/wall_seconds.csv ] || echo "run,wall_s,load_start,load_end" > $OUT/wall_seconds.csv
load() { cut -d' ' -f1 /proc/loadavg; }
for agent in ${AGENTS:-sac td3}; do
  for n in ${NUMS:-1 16 128 1024}; do
    run=${agent}_n$n
    if grep -qs '"finished": true' $OUT/$run/status.json; then continue; fi
    ratio=$(python -c "print(2 / $n)")
    start=$(date +%s) load_start=$(load)
    python experiments/run.py --agent $agent --env mjx:CartpoleBalance --num-seeds 2 --num-envs $n \
      --updates-per-step $ratio --batch-size 256 --learning-starts 5000 \
      --critic-hidden 128 128 --actor-hidden 128 128 \
      --total-steps $((LOOP_STEPS * n)) --eval-every $((1000 * n)) --log-every $((500 * n)) --eval-episodes 4 \
      --no-progress --overwrite --run-dir $OUT/$run
    echo "$run,$(( $(date +%s) - start )),$load_start,$(load)" >> $OUT/wall_seconds.csv
    python $OUT/summarize.py || true
  done
done
