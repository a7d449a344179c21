#!/usr/bin/env python
"""Load benchmark of mrcnn_serve against a plain loop over the C++ library, in one run.

    .venv/bin/python scripts/bench_serve.py [--model model.ts] [--device cpu|cuda] [--threads 2]
                                            [--concurrency 1 2 4 8] [--calls 8] [--requests 4]
                                            [--queue 4] [--max-batch 4] [--max-wait-ms 5]

Both sides get the same three coco-mini JPEG photos, in turn, and the same intra-op threads.
The library loop (build/cpp/mrcnn_bench --stdin, kept running) decodes a photo's bytes and
calls Detector::detect with masks as cv::Mat, one call at a time. The service runs at the same
time and is driven by C concurrent clients, each sending its requests back to back on its own
connection (POST /v1/detect, masks as RLE in the JSON answer); a 503 (queue full) is counted
as a refusal and the client waits for Retry-After (at most 0.5 s) before its next request.
The two are measured side by side so that a machine that drifts moves both: at concurrency
1 loop calls and requests alternate, and before each higher level a few loop calls give that
level its reference (the "loop_images_per_s" of its row).
Answers are checked after each level: every 200 must hold as many detections as the library
found on that photo. Default model: R50-FPN Mask R-CNN with the golden weights rule (about 100
detections per photo, so masks and JSON are of realistic size).

Printed and written to OUTPUT/bench_serve.{md,json}: images/s, p50 and p99 latency per level,
and the four targets of the service: HTTP + JSON + RLE cost <= 5 % of throughput at
concurrency 1, throughput at concurrency 4 >= the loop's, p99 at the highest concurrency
within the queue's bound (the batch in flight, the full batches queued ahead and its own:
(ceil(queue / max batch) + 1) x max batch x the loop's median latency, +25 %, + max wait + 1 s),
0 errors.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mrcnn_plugin.export.serve_client import ServeProcess, request  # noqa: E402
from mrcnn_plugin.utils.cpu import cpu_name, isa_flags  # noqa: E402


def _percentile(values: List[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _export_golden(shared: Path, out_dir: Path) -> Path:
    """R50-FPN Mask R-CNN with the golden weights rule, exported to out_dir/model.ts."""
    from mrcnn_plugin.bench import golden_cfg, golden_model
    from mrcnn_plugin.export import export_model

    return export_model(golden_cfg(), str(out_dir), model=golden_model(shared))


class LibraryLoop:
    """The plain loop: mrcnn_bench --stdin, the library in its own process, warmed up; call(k)
    runs photo k once there. Kept alive so that its calls interleave with the service's."""

    def __init__(self, binary: Path, model: Path, photos: List[Path], threads: int, device: str):
        self.proc = subprocess.Popen([str(binary), "--model", str(model), "--device", device, "--threads",
                                      str(threads), "--warmup", "2", "--stdin", *map(str, photos)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"mrcnn_bench failed: {self.proc.stderr.read().strip()}")

    def call(self, k: int) -> Dict:
        """{"seconds", "detections"} of one call on photo k."""
        self.proc.stdin.write(f"{k}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"mrcnn_bench stopped: {self.proc.stderr.read().strip()}")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def drive(port: int, bodies: List[bytes], concurrency: int, requests_per_client: int, first: int = 0) -> Dict:
    """C clients x N requests against the service (client c's r-th request sends photo
    first + c + r * C, modulo their number): wall time, and per request its photo index,
    status, latency and answer (decoded after the clock stops)."""
    records: List[Dict] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for r in range(requests_per_client):
            k = (first + c + r * concurrency) % len(bodies)
            start = time.perf_counter()
            try:
                status, headers, body = request(port, "POST", "/v1/detect", bodies[k], "image/jpeg", timeout=600)
            except OSError as e:
                status, headers, body = -1, {}, str(e).encode()
            seconds = time.perf_counter() - start
            with lock:
                records.append({"photo": k, "status": status, "seconds": seconds, "body": body})
            if status == 503:
                time.sleep(min(float(headers.get("Retry-After", "1")), 0.5))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"wall_s": time.perf_counter() - start, "records": records}


def summarize(level: Dict, concurrency: int, expected_counts: List[int], loop_seconds: List[float]) -> Dict:
    """One row: the level's throughput, latencies, refusals and errors (an answer whose detection
    count differs from the library's is an error), against the loop calls made next to it."""
    ok = [r for r in level["records"] if r["status"] == 200]
    refused = sum(r["status"] == 503 for r in level["records"])
    errors = [r for r in level["records"] if r["status"] not in (200, 503)]
    for r in ok:
        found = len(json.loads(r["body"])["detections"])
        if found != expected_counts[r["photo"]]:
            errors.append({**r, "status": f"200 with {found} detections, the library found "
                                          f"{expected_counts[r['photo']]}"})
    latencies = [r["seconds"] for r in ok]
    loop_rate = len(loop_seconds) / sum(loop_seconds)
    rate = len(ok) / level["wall_s"]
    return {"concurrency": concurrency, "requests": len(level["records"]), "ok": len(ok), "refused_503": refused,
            "errors": len(errors), "error_samples": [str(e["status"]) for e in errors[:3]],
            "images_per_s": rate, "loop_images_per_s": loop_rate, "vs loop": rate / loop_rate,
            "p50_s": _percentile(latencies, 50), "p99_s": _percentile(latencies, 99)}


def run(args: argparse.Namespace) -> Dict:
    shared = Path(args.shared)
    photos = sorted((shared / "data" / "coco-mini" / "val2017").glob("*.jpg"))[:3]
    if len(photos) < 3:
        raise SystemExit(f"bench_serve: needs coco-mini val photos under {shared / 'data' / 'coco-mini'} (--shared)")
    build = Path(args.build)
    for name in ("mrcnn_bench", "mrcnn_serve"):
        if not (build / name).exists():
            raise SystemExit(f"bench_serve: {build / name} is missing: run bash scripts/build_cpp.sh")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    bodies = [p.read_bytes() for p in photos]
    all_loop: List[float] = []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else _export_golden(shared, Path(tmp))
        loop = LibraryLoop(build / "mrcnn_bench", model, photos, args.threads, args.device)
        service = None
        try:
            counts = [loop.call(k)["detections"] for k in range(len(photos))]  # also one untimed call per size
            service = ServeProcess(build / "mrcnn_serve", model, "--device", args.device, "--threads",
                                   str(args.threads), "--max-batch", str(args.max_batch), "--max-wait-ms",
                                   str(args.max_wait_ms), "--queue", str(args.queue))
            drive(service.port, bodies, 1, len(photos))  # one untimed request per size
            for c in args.concurrency:
                if c == 1:
                    # Loop call and request alternate, photo by photo: the same conditions for both.
                    print(f"[bench_serve] loop and service alternating: {args.calls} calls each")
                    near, levels = [], []
                    for i in range(args.calls):
                        near.append(loop.call(i % len(photos))["seconds"])
                        levels.append(drive(service.port, bodies, 1, 1, first=i))
                    level = {"wall_s": sum(x["wall_s"] for x in levels),
                             "records": [r for x in levels for r in x["records"]]}
                else:
                    near = [loop.call(i % len(photos))["seconds"] for i in range(args.loop_calls)]
                    print(f"[bench_serve] service: {c} clients x {args.requests} requests")
                    level = drive(service.port, bodies, c, args.requests)
                all_loop += near
                rows.append(summarize(level, c, counts, near))
            metrics = service.metrics()
        finally:
            status = service.stop() if service else None
            loop.close()
    loop_row = {"concurrency": "library loop", "requests": len(all_loop), "ok": len(all_loop), "refused_503": 0,
                "errors": 0, "images_per_s": len(all_loop) / sum(all_loop), "loop_images_per_s": float("nan"),
                "vs loop": 1.0, "p50_s": _percentile(all_loop, 50), "p99_s": _percentile(all_loop, 99)}
    by_c = {r["concurrency"]: r for r in rows}
    # Ahead of a request: the batch in flight and the full batches queued before it; then its own.
    batches = -(-args.queue // args.max_batch) + 1
    bound = batches * args.max_batch * loop_row["p50_s"] * 1.25 + args.max_wait_ms / 1000 + 1.0
    top = max(args.concurrency)
    targets = {
        "HTTP + JSON + RLE cost at concurrency 1 <= 5 %":
            (1 - by_c[1]["vs loop"]) <= 0.05 if 1 in by_c else None,
        "throughput at concurrency 4 >= library loop": by_c[4]["vs loop"] >= 1.0 if 4 in by_c else None,
        f"p99 at concurrency {top} <= {bound:.1f} s (queue bound)": by_c[top]["p99_s"] <= bound,
        "0 errors, clean exit": sum(r["errors"] for r in rows) == 0 and status == 0,
    }
    report = {"cpu": cpu_name(), "isa_flags": isa_flags(), "torch": torch.__version__, "threads": args.threads,
              "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
              "model": "golden R50-FPN" if not args.model else str(args.model), "photos": [p.name for p in photos],
              "service_flags": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "queue": args.queue},
              "detections_per_photo": counts, "rows": [loop_row] + rows, "targets": targets,
              "service_exit_status": status, "queue_bound_s": bound,
              "service_batches": metrics.get("mrcnn_batch_size_count", float("nan"))}
    _write(report, output)
    return report


def _write(report: Dict, output: Path) -> None:
    header = ["concurrency", "requests", "ok", "refused_503", "errors", "images_per_s", "loop_images_per_s",
              "vs loop", "p50_s", "p99_s"]
    fmt = {"images_per_s": "{:.3f}", "loop_images_per_s": "{:.3f}", "vs loop": "{:.3f}", "p50_s": "{:.2f}",
           "p99_s": "{:.2f}"}
    lines = [f"CPU {report['cpu']} (ISA flags: {' '.join(report['isa_flags']) or 'none of note'}), torch "
             f"{report['torch']}, device {report['device']}, {report['threads']} intra-op threads, model {report['model']}, photos "
             f"{', '.join(report['photos'])} ({report['detections_per_photo']} detections), service "
             f"max batch {report['service_flags']['max_batch']}, wait {report['service_flags']['max_wait_ms']} ms, "
             f"queue {report['service_flags']['queue']}.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in report["rows"]:
        lines.append("| " + " | ".join(fmt.get(h, "{}").format(row[h]) for h in header) + " |")
    lines += ["", "Targets:"] + [f"- {name}: {'PASS' if ok else ('n/a' if ok is None else 'FAIL')}"
                                 for name, ok in report["targets"].items()]
    text = "\n".join(lines)
    print(text)
    (output / "bench_serve.md").write_text(text + "\n")
    (output / "bench_serve.json").write_text(json.dumps(report, indent=2, default=float))
    print(f"\nwrote {output / 'bench_serve.md'} and {output / 'bench_serve.json'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a model.ts (default: the golden R50-FPN, exported here)")
    parser.add_argument("--shared", default=str(REPO.parent / "shared"), help="folder with golden/ and data/coco-mini")
    parser.add_argument("--build", default=str(REPO / "build" / "cpp"), help="folder with mrcnn_bench and mrcnn_serve")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both sides run the model")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads, both sides")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8], help="client counts")
    parser.add_argument("--calls", type=int, default=8, help="library loop calls, and requests at concurrency 1")
    parser.add_argument("--requests", type=int, default=4, help="requests per client above concurrency 1")
    parser.add_argument("--loop-calls", type=int, default=3,
                        help="library loop calls made just before each level above concurrency 1, its reference")
    parser.add_argument("--max-batch", type=int, default=4, help="mrcnn_serve --max-batch")
    parser.add_argument("--max-wait-ms", type=int, default=5, help="mrcnn_serve --max-wait-ms")
    parser.add_argument("--queue", type=int, default=4, help="mrcnn_serve --queue (below the top concurrency: 503s)")
    parser.add_argument("--output", default="outputs/bench_serve", help="writes bench_serve.{md,json} here")
    report = run(parser.parse_args(argv))
    return 0 if all(v is not False for v in report["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
