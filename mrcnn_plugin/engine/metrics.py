"""Training metrics: a window of per-iteration values, and the places they are written.

Every iteration the trainer adds its losses, lr, time and data_time to a
`MetricsWindow`; every `log_period` iterations (and at the last one) the
window's medians go as one record to:
- `OUTPUT_DIR/metrics.json`: JSON lines, {"iteration": i, "total_loss": ..., ...};
  evaluation results are added to the record of the iteration they were computed at;
- TensorBoard event files in OUTPUT_DIR (torch.utils.tensorboard.SummaryWriter).
Medians, as detectron2, so that one odd batch does not dominate a logged value.
Only the main process writes.
"""
import json
import logging
import os
import statistics
from collections import defaultdict
from typing import Any, Dict, List, Mapping

__all__ = ["MetricsWindow", "JSONLinesWriter", "TensorBoardWriter", "flatten_results", "read_metrics"]

logger = logging.getLogger(__name__)


class MetricsWindow:
    """Values added since the last `pop_medians()`, per name."""

    def __init__(self) -> None:
        self._values: Dict[str, List[float]] = defaultdict(list)

    def add(self, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self._values[name].append(float(value))

    def medians(self) -> Dict[str, float]:
        """Median of each name's values in the window."""
        return {name: statistics.median(vals) for name, vals in self._values.items() if vals}

    def pop_medians(self) -> Dict[str, float]:
        """medians(), then an empty window."""
        result = self.medians()
        self._values.clear()
        return result


def flatten_results(results: Mapping[str, Any], prefix: str = "") -> Dict[str, float]:
    """{"bbox": {"AP": 1.0}} -> {"bbox/AP": 1.0} (any depth)."""
    flat: Dict[str, float] = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_results(value, name + "/"))
        else:
            flat[name] = float(value)
    return flat


class JSONLinesWriter:
    """Appends one JSON object per line to a file (kept open, flushed after every line).

    Appending, so a resumed run continues the file of the interrupted one.
    """

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._file = open(path, "a", encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(dict(record), sort_keys=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class TensorBoardWriter:
    """Scalars to TensorBoard event files under `log_dir`."""

    def __init__(self, log_dir: str):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=log_dir)

    def write(self, iteration: int, scalars: Mapping[str, float]) -> None:
        for name, value in scalars.items():
            self._writer.add_scalar(name, value, iteration)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def read_metrics(path: str) -> List[Dict[str, Any]]:
    """The records of a metrics.json file; unparsable lines (a crash mid-write) are skipped."""
    records: List[Dict[str, Any]] = []
    if not os.path.isfile(path):
        return records
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("Skipping an unreadable line of %s: %.80s", path, line)
    return records

