"""What happened when a checkpoint was loaded into a model: one table of every problem, by name."""
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

__all__ = ["LoadReport", "match_by_suffix", "shapes_of"]

Shape = Tuple[int, ...]


@dataclass
class LoadReport:
    """The outcome of loading `source` into a model.

    loaded: number of model tensors that received a value.
    missing: (model key, model shape) for model tensors the checkpoint lacks.
    unexpected: (checkpoint key, checkpoint shape) for checkpoint tensors the model has no place for.
    shape_mismatches: (key, checkpoint shape, model shape); those tensors were not loaded.
    renamed: checkpoint key -> model key, for names matched by suffix (e.g. an ImageNet
    backbone's `res2.0.conv1.weight` -> `backbone.bottom_up.res2.0.conv1.weight`).
    """

    source: str
    loaded: int = 0
    missing: List[Tuple[str, Shape]] = field(default_factory=list)
    unexpected: List[Tuple[str, Shape]] = field(default_factory=list)
    shape_mismatches: List[Tuple[str, Shape, Shape]] = field(default_factory=list)
    renamed: Dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every model tensor was loaded and every checkpoint tensor used."""
        return not (self.missing or self.unexpected or self.shape_mismatches)

    def rows(self) -> List[Tuple[str, str, str, str]]:
        """(problem, key, checkpoint shape, model shape) rows, mismatches first."""
        def fmt(shape: Shape) -> str:
            return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"

        rows = [("shape mismatch", k, fmt(c), fmt(m)) for k, c, m in self.shape_mismatches]
        rows += [("missing in checkpoint", k, "-", fmt(m)) for k, m in self.missing]
        rows += [("not used by the model", k, fmt(c), "-") for k, c in self.unexpected]
        return rows

    def table(self) -> str:
        """The report as one text table (the headline, then a row per problem)."""
        head = (f"Loaded {self.loaded} tensors from {self.source}: {len(self.shape_mismatches)} shape "
                f"mismatches, {len(self.missing)} missing in the checkpoint, {len(self.unexpected)} not used "
                "by the model")
        rows = self.rows()
        if not rows:
            return head + "."
        header = ("problem", "key", "checkpoint", "model")
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
        line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        return "\n".join([head + ":", line(header), sep] + [line(r) for r in rows])

    def __str__(self) -> str:
        return self.table()


def match_by_suffix(checkpoint_keys: Iterable[str], model_keys: Sequence[str]) -> Tuple[Dict[str, str], List[str]]:
    """Maps checkpoint names that lack the model's prefixes onto model names.

    A checkpoint key that is not a model key is matched to the one model key
    ending in "." + that key (so `conv1.weight` never matches `fpn.xconv1.weight`).
    Keys that match exactly are left alone, and a model key already taken by an
    exact match is not offered again. Returns (checkpoint key -> model key for
    every renamed key, checkpoint keys that matched several model keys).
    """
    model_set = set(model_keys)
    checkpoint_keys = list(checkpoint_keys)
    taken = {k for k in checkpoint_keys if k in model_set}
    by_suffix: Dict[str, List[str]] = {}
    for key in model_keys:
        if key in taken:
            continue
        parts = key.split(".")
        for i in range(1, len(parts)):
            by_suffix.setdefault(".".join(parts[i:]), []).append(key)
    renamed: Dict[str, str] = {}
    ambiguous: List[str] = []
    for key in checkpoint_keys:
        if key in model_set:
            continue
        candidates = by_suffix.get(key, [])
        if len(candidates) == 1 and candidates[0] not in renamed.values():
            renamed[key] = candidates[0]
        elif len(candidates) > 1:
            ambiguous.append(key)
    return renamed, ambiguous


def shapes_of(state_dict: Mapping[str, object]) -> Dict[str, Shape]:
    """Key -> shape tuple of every tensor-like value."""
    return {k: tuple(getattr(v, "shape", ())) for k, v in state_dict.items()}
