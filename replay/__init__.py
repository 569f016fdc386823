"""Device-resident, jittable, vmappable replay buffers and offline datasets."""

from replay.buffer import ReplayBuffer, Subsequence, Transition, capacity_for, create, add, sample_indices, subsequence, update_priority, mean_abs_reward, TransitionBatch, sample_transitions

__all__ = ["ReplayBuffer", "Subsequence", "Transition", "capacity_for", "create", "add", "sample_indices", "subsequence",
           "update_priority", "mean_abs_reward", "TransitionBatch", "sample_transitions"]
