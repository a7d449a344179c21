"""Index samplers: an infinite shuffled stream for training, disjoint shards for inference.

Both shard across torch.distributed ranks (rank / world size taken from
torch.distributed when it is initialised, or given explicitly, which is how
tests simulate several ranks in one process).
"""
import itertools
import math
from collections import defaultdict
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["TrainingSampler", "RepeatFactorTrainingSampler", "InferenceSampler",
           "repeat_factors_from_category_frequency", "get_rank_and_world_size", "shared_random_seed"]


def get_rank_and_world_size() -> Tuple[int, int]:
    """(rank, world size) of torch.distributed, or (0, 1) when it is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shared_random_seed() -> int:
    """A random seed that is the same on every rank (rank 0's draw, sent to all)."""
    seed = int(np.random.randint(2 ** 31))
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        seeds: List[Optional[int]] = [None] * dist.get_world_size()
        dist.all_gather_object(seeds, seed)
        seed = int(seeds[0])
    return seed


def _resolve_rank(rank: Optional[int], world_size: Optional[int]) -> Tuple[int, int]:
    dist_rank, dist_world = get_rank_and_world_size()
    rank = dist_rank if rank is None else rank
    world_size = dist_world if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    return rank, world_size


class TrainingSampler(Sampler):
    """Endless indices into a dataset of `size`: epoch after epoch, each a permutation
    (or 0..size-1 when shuffle is False). Rank r of W takes every W-th index
    from position r of the one stream all ranks generate from the same seed,
    so ranks see disjoint images within an epoch.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: Optional[int] = None,
                 rank: Optional[int] = None, world_size: Optional[int] = None):
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a non-empty dataset, got size {size}")
        self._size = int(size)
        self._shuffle = shuffle
        self._seed = shared_random_seed() if seed is None else int(seed)
        self._rank, self._world_size = _resolve_rank(rank, world_size)

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self._seed)
        while True:
            if self._shuffle:
                yield from torch.randperm(self._size, generator=g).tolist()
            else:
                yield from range(self._size)


def repeat_factors_from_category_frequency(records: List[dict], repeat_thresh: float,
                                           sqrt: bool = True) -> torch.Tensor:
    """LVIS-style repeat factor per image: Tensor[len(records)] float32.

    A category in fraction f of the images gets r = max(1, t / f) (its square
    root when sqrt); an image's factor is the largest r of its categories.
    """
    image_freq: Dict[int, int] = defaultdict(int)
    cats_per_image = [{a["category_id"] for a in r.get("annotations", [])} for r in records]
    for cats in cats_per_image:
        for c in cats:
            image_freq[c] += 1
    n = len(records)
    category_rep = {}
    for c, count in image_freq.items():
        ratio = repeat_thresh / (count / n)
        category_rep[c] = max(1.0, math.sqrt(ratio) if sqrt else ratio)
    factors = [max((category_rep[c] for c in cats), default=1.0) for cats in cats_per_image]
    return torch.tensor(factors, dtype=torch.float32)


class RepeatFactorTrainingSampler(TrainingSampler):
    """TrainingSampler where image i appears repeat_factors[i] times per epoch on average.

    The fractional part is rounded stochastically each epoch, so the expected
    count is exact.
    """

    def __init__(self, repeat_factors: torch.Tensor, shuffle: bool = True, seed: Optional[int] = None,
                 rank: Optional[int] = None, world_size: Optional[int] = None):
        super().__init__(len(repeat_factors), shuffle, seed, rank, world_size)
        self._int_part = torch.trunc(repeat_factors)
        self._frac_part = repeat_factors - self._int_part

    def _epoch_indices(self, g: torch.Generator) -> torch.Tensor:
        rands = torch.rand(len(self._frac_part), generator=g)
        counts = (self._int_part + (rands < self._frac_part).float()).long()
        return torch.repeat_interleave(torch.arange(len(counts)), counts)

    def _infinite_indices(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self._seed)
        while True:
            indices = self._epoch_indices(g)
            if self._shuffle:
                indices = indices[torch.randperm(len(indices), generator=g)]
            yield from indices.tolist()


class InferenceSampler(Sampler):
    """Indices 0..size-1 split into contiguous shards, one per rank; every index once overall.

    The first size % world_size ranks get one extra index (shard sizes differ by at most one).
    """

    def __init__(self, size: int, rank: Optional[int] = None, world_size: Optional[int] = None):
        self._size = int(size)
        self._rank, self._world_size = _resolve_rank(rank, world_size)
        base, extra = divmod(self._size, self._world_size)
        sizes = [base + (1 if r < extra else 0) for r in range(self._world_size)]
        begin = sum(sizes[:self._rank])
        self._local = range(begin, begin + sizes[self._rank])

    def __iter__(self) -> Iterator[int]:
        return iter(self._local)

    def __len__(self) -> int:
        return len(self._local)
