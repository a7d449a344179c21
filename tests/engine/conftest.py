"""Fixtures of the engine tests: one compute thread, and the package's logging left as it was."""
import logging
import os

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Trains with one intra-op thread: the two CPU cores are shared with other jobs, and
    oversubscribed OpenMP threads slow CPU training down by an order of magnitude."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def restore_logging_and_env():
    """`mrcnn train` (run in-process by some tests) configures the package logger and sets
    PYTHONHASHSEED; undo both so other tests see the usual state."""
    package_logger = logging.getLogger("mrcnn_plugin")
    saved = (list(package_logger.handlers), package_logger.propagate, package_logger.level)
    hash_seed = os.environ.get("PYTHONHASHSEED")
    yield
    for handler in package_logger.handlers:
        if handler not in saved[0]:
            handler.close()
    package_logger.handlers[:] = saved[0]
    package_logger.propagate, package_logger.level = saved[1], saved[2]
    if hash_seed is None:
        os.environ.pop("PYTHONHASHSEED", None)
    else:
        os.environ["PYTHONHASHSEED"] = hash_seed
