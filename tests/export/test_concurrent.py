"""The exported TorchScript model is safe to call from several Python threads at once: four
threads running it at the same time on four different images get exactly (bitwise) the outputs
that one thread gets calling it on the same images one after another, whether the module is
fresh (its first calls, when TorchScript profiles and optimizes the graph) or warm.

The model is conftest's tiny_model_ts: a small random Mask R-CNN (ResNet-18 FPN, seeded
weights, one class so that its random scores pass the 0.05 threshold), exported with
export_model as `mrcnn export` does.
"""
import threading
import time
from typing import Dict, List

import pytest
import torch

from mrcnn_plugin.export import load_exported

NUM_THREADS = 4
ROUNDS = 3


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread per call: the two CPU cores are shared with other jobs (and here with
    four calling threads); oversubscribed OpenMP threads are tens of times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _images() -> List[torch.Tensor]:
    """Four different uint8 BGR images of four sizes (landscape, portrait, square, wide)."""
    g = torch.Generator().manual_seed(0)
    sizes = [(90, 120), (120, 90), (100, 100), (64, 150)]
    return [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in sizes]


def _run_sequentially(module, images) -> List[Dict[str, torch.Tensor]]:
    with torch.no_grad():
        return [module([image])[0] for image in images]


def _run_concurrently(module, images, rounds: int):
    """Each of NUM_THREADS threads calls the module on its own image `rounds` times, all starting
    together. Returns (per thread the list of its outputs, per thread its (start, end) times)."""
    outputs: List[List[Dict[str, torch.Tensor]]] = [[] for _ in images]
    spans = [None] * len(images)
    errors: List[BaseException] = []
    barrier = threading.Barrier(len(images))

    def work(i: int) -> None:
        try:
            barrier.wait()
            start = time.perf_counter()
            with torch.no_grad():
                for _ in range(rounds):
                    outputs[i].append(module([images[i]])[0])
            spans[i] = (start, time.perf_counter())
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread did not finish in 300 s"
    assert not errors, errors
    return outputs, spans


def _assert_identical(got: Dict[str, torch.Tensor], expected: Dict[str, torch.Tensor], what: str) -> None:
    assert got.keys() == expected.keys() == {"boxes", "scores", "classes", "masks"}, what
    for key in expected:
        assert got[key].dtype == expected[key].dtype and torch.equal(got[key], expected[key]), f"{what}: {key}"


def test_four_threads_at_once_equal_one_thread(tiny_model_ts):
    """One module loaded for the reference (one thread, images one after another, twice: the same
    both times) and another loaded fresh and called at once from 4 threads, 3 times each; the
    threads' calls overlap in time, and every output tensor (boxes, scores, classes, masks) equals
    the reference bitwise, for each of the 4 images and each round."""
    images = _images()
    reference_module, _ = load_exported(str(tiny_model_ts))
    reference = _run_sequentially(reference_module, images)
    again = _run_sequentially(reference_module, images)
    for i, (a, b) in enumerate(zip(again, reference)):
        _assert_identical(a, b, f"image {i}, second sequential run")
    assert all(len(r["scores"]) > 0 for r in reference)   # something to compare
    assert all(tuple(r["masks"].shape[1:]) == tuple(image.shape[1:]) for r, image in zip(reference, images))

    fresh, _ = load_exported(str(tiny_model_ts))
    outputs, spans = _run_concurrently(fresh, images, ROUNDS)
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"the threads did not overlap: {spans}"
    for i, per_thread in enumerate(outputs):
        assert len(per_thread) == ROUNDS
        for r, out in enumerate(per_thread):
            _assert_identical(out, reference[i], f"image {i}, round {r}, {NUM_THREADS} threads")
