"""Device-resident, jittable, vmappable replay buffers and offline datasets.

Offline datasets (D4RL HDF5 layout, Minari folders) are used as `replay.datasets.load(...)`,
`replay.datasets.sample(...)`.
"""

from replay import datasets
from replay.buffer import (ReplayBuffer, Subsequence, Transition, TransitionBatch, add, capacity_for, create,
                           mean_abs_reward, sample_indices, sample_transitions, subsequence, update_priority)
from replay.datasets import Dataset, DatasetError, DatasetMetadata, SequenceBatch, normalized_score

__all__ = ["ReplayBuffer", "Subsequence", "Transition", "TransitionBatch", "add", "capacity_for", "create",
           "mean_abs_reward", "sample_indices", "sample_transitions", "subsequence", "update_priority",
           "datasets", "Dataset", "DatasetError", "DatasetMetadata", "SequenceBatch", "normalized_score"]
