"""scripts/bench_serve.py, the service's load benchmark, on the tiny model: it measures the
library loop and every concurrency level in one run, checks every answer against the
library's detections, refuses with 503 (not errors, not hangs) when the clients outnumber the
queue, and writes its report. Its speed targets are for the R50-FPN model and are not
asserted here (export/README.md has the numbers)."""
import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_serve", REPO / "scripts" / "bench_serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_percentile_interpolates():
    """p50 of 1..4 is 2.5, p99 lies between the two largest, p0 is the smallest."""
    percentile = _bench_module()._percentile
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert 3.9 < percentile([1.0, 2.0, 3.0, 4.0], 99) < 4.0
    assert percentile([5.0, 7.0], 0) == 5.0


def test_runs_every_level_and_counts_overload(cpp_build, tiny_model_ts, shared_dir, tmp_path):
    """Loop + concurrency 1, 2 and 8 against a queue of 1 with batches of 1 (two requests held
    at most, each ~50 ms): every answered request holds the library's detection count, the 8
    clients that start together get some 503s and no errors,
    the service exits 0, and bench_serve.{md,json} hold the rows and targets."""
    bench = _bench_module()
    rc = bench.main(["--model", str(tiny_model_ts), "--shared", str(shared_dir), "--build", str(cpp_build),
                     "--threads", "1", "--concurrency", "1", "2", "8", "--calls", "3", "--requests", "3",
                     "--queue", "1", "--max-batch", "1", "--output", str(tmp_path)])
    report = json.loads((tmp_path / "bench_serve.json").read_text())
    rows = {r["concurrency"]: r for r in report["rows"]}
    assert set(rows) == {"library loop", 1, 2, 8}
    # 3 loop calls alternating at concurrency 1, then 3 (--loop-calls) before each other level
    assert rows["library loop"]["ok"] == 3 + 3 * 2 and rows[1]["ok"] == 3 and rows[2]["ok"] == 6
    assert all(r["loop_images_per_s"] > 0 for r in report["rows"][1:])
    assert all(r["errors"] == 0 for r in report["rows"]), report["rows"]
    assert rows[8]["refused_503"] > 0 and rows[8]["ok"] + rows[8]["refused_503"] == 24
    assert report["service_exit_status"] == 0
    assert all(c > 0 for c in report["detections_per_photo"])
    assert report["targets"]["0 errors, clean exit"] is True
    assert rc == (0 if all(v is not False for v in report["targets"].values()) else 1)
    assert "| library loop |" in (tmp_path / "bench_serve.md").read_text()
