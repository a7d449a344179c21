"""mrcnn_serve (export/cpp/apps/serve): the reference HTTP service on the C++ library, started
on a free loopback port with conftest's tiny model. Concurrent clients get the Python model's
detections; each bad input gets its status code and the service keeps answering; /metrics
counts what was sent; SIGTERM under load lets every accepted request finish, exit 0."""
import io
import json
import signal
import threading
import time
import zlib

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

from mrcnn_plugin.export import load_exported
from mrcnn_plugin.export.serve_client import ServeProcess, request

NUM_PHOTOS = 3
MAX_BODY_MB = 2


@pytest.fixture(scope="module")
def photos(shared_dir):
    """Three coco-mini val photos as PNG bodies (lossless, so the service sees the pixels the
    Python reference sees) and as uint8 BGR tensors."""
    out = []
    for path in sorted((shared_dir / "data" / "coco-mini" / "val2017").glob("*.jpg"))[:NUM_PHOTOS]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        out.append((buf.getvalue(), torch.from_numpy(np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))), path))
    return out


@pytest.fixture(scope="module")
def expected(tiny_model_ts, photos):
    """The Python model's detections on each photo (the same model.ts, one thread)."""
    module, _ = load_exported(str(tiny_model_ts))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.no_grad():
        out = [module([bgr])[0] for _, bgr, _ in photos]
    torch.set_num_threads(previous)
    assert all(r["scores"].numel() > 0 for r in out)
    return out


@pytest.fixture(scope="module")
def service(cpp_build, tiny_model_ts):
    s = ServeProcess(cpp_build / "mrcnn_serve", tiny_model_ts, "--threads", "1", "--max-batch", "4", "--max-wait-ms", "20", "--queue", "16",
                "--max-body-mb", str(MAX_BODY_MB))
    yield s
    assert s.stop() == 0


def assert_equal_detections(body: bytes, ref: dict) -> None:
    """A /v1/detect response equals the Python detections: classes, boxes within 0.05 px, scores
    within 1e-4, mask IoU > 0.99 (or <= 4 pixels differ)."""
    result = json.loads(body)
    dets = result["detections"]
    assert len(dets) == ref["boxes"].shape[0]
    assert [d["class"] for d in dets] == ref["classes"].tolist()
    assert (torch.tensor([d["box"] for d in dets]) - ref["boxes"]).abs().max() <= 0.05
    assert (torch.tensor([d["score"] for d in dets]) - ref["scores"]).abs().max() <= 1e-4
    assert [result["height"], result["width"]] == list(ref["masks"].shape[1:])
    for d, m in zip(dets, ref["masks"].numpy().astype(bool)):
        ours = mask_util.decode(mask_util.frPyObjects(d["mask_rle"], *d["mask_rle"]["size"])).astype(bool)
        union = (ours | m).sum()
        assert union == 0 or (ours & m).sum() / union > 0.99 or (ours ^ m).sum() <= 4
        assert d["mask_area"] == ours.sum()


def test_concurrent_clients_get_the_python_detections(service, photos, expected):
    """4 clients x 10 requests at once: every answer is 200 and equals the Python model's; the
    requests ran in batches of more than one; /metrics counted all 40."""
    before = service.metrics()
    failures = []

    def client(c: int) -> None:
        for i in range(10):
            k = (c + i) % NUM_PHOTOS
            try:
                status, _, body = request(service.port, "POST", "/v1/detect", photos[k][0])
                assert status == 200, body
                assert_equal_detections(body, expected[k])
            except BaseException as e:  # reported by the main thread
                failures.append(f"client {c} request {i}: {e!r}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not failures, failures[:3]
    after = service.metrics()
    delta = lambda key: after.get(key, 0) - before.get(key, 0)  # noqa: E731
    assert delta('mrcnn_requests_total{code="200"}') == 40
    assert delta("mrcnn_request_latency_seconds_count") == 40
    assert delta("mrcnn_batch_size_sum") == 40
    assert delta("mrcnn_batch_size_count") < 40, "no batch held more than one request"
    assert after["mrcnn_queue_depth"] == 0 and after["mrcnn_ready"] == 1


def _png_header(width: int, height: int) -> bytes:
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + len(ihdr).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")


def test_bad_input_gets_its_status_and_the_service_goes_on(service, photos, expected, shared_dir):
    """0 bytes, a truncated JPEG, a text file, a PNG header claiming 100000x100000 pixels, a body
    over the limit, a bad query, a wrong path and a wrong method: each its status code and a JSON
    error; /metrics counts the detect ones by code; a photo is then answered as before."""
    jpeg = photos[0][2].read_bytes()
    cases = [
        ("POST", "/v1/detect", b"", "image/jpeg", 400, "empty body"),
        ("POST", "/v1/detect", jpeg[: len(jpeg) // 2], "image/jpeg", 400, "truncated JPEG"),
        ("POST", "/v1/detect", b"just some text\n", "text/plain", 415, "Content-Type must be image/*"),
        ("POST", "/v1/detect", b"just some text\n", "image/jpeg", 400, "not a JPEG or PNG"),
        ("POST", "/v1/detect", _png_header(100000, 100000), "image/png", 413, "100000x100000"),
        ("POST", "/v1/detect", b"\x89PNG" + bytes(MAX_BODY_MB << 20), "image/png", 413, "over the limit"),
        ("POST", "/v1/detect?masks=bitmap", photos[0][0], "image/png", 400, "masks must be rle or none"),
        ("POST", "/v1/detect?score_threshold=2", photos[0][0], "image/png", 400, "score_threshold"),
        ("POST", "/v1/nothing", photos[0][0], "image/png", 404, "no such path"),
        ("GET", "/v1/detect", b"", "", 405, "use POST"),
    ]
    before = service.metrics()
    for method, path, body, content_type, code, message in cases:
        status, headers, answer = request(service.port, method, path, body, content_type)
        assert status == code, (path, content_type, status, answer[:200])
        assert message in json.loads(answer)["error"], (path, answer[:200])
        if code == 405:
            assert headers.get("Allow") == "POST"
    after = service.metrics()
    for code, n in [(400, 5), (415, 1), (413, 1)]:
        # the body over the limit is refused by the HTTP layer before the detect handler
        assert after.get(f'mrcnn_requests_total{{code="{code}"}}', 0) - before.get(f'mrcnn_requests_total{{code="{code}"}}', 0) == n, code
    status, _, body = request(service.port, "POST", "/v1/detect?score_threshold=0&masks=rle", photos[1][0])
    assert status == 200
    assert_equal_detections(body, expected[1])
    status, _, body = request(service.port, "POST", "/v1/detect", jpeg, "image/jpeg")
    assert status == 200 and json.loads(body)["detections"]
    status, _, body = request(service.port, "POST", "/v1/detect?masks=none&score_threshold=0.5", photos[1][0])
    dets = json.loads(body)["detections"]
    assert status == 200 and all("mask_rle" not in d and d["score"] >= 0.5 for d in dets)
    assert len(dets) == int((expected[1]["scores"] >= 0.5).sum())


def test_health_endpoints(service):
    """Liveness and readiness, also at the Open Inference Protocol's paths."""
    for path in ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"]:
        assert request(service.port, "GET", path)[0] == 200, path


def test_sigterm_under_load_finishes_accepted_requests(cpp_build, tiny_model_ts, photos, expected):
    """4 clients send requests in a loop; SIGTERM arrives while requests are in flight. Every
    request that was accepted is answered (200 with the right detections, or 503 once the
    service drains); the only other outcome is a refused connection after the socket closed;
    the process exits 0."""
    s = ServeProcess(cpp_build / "mrcnn_serve", tiny_model_ts, "--threads", "1", "--max-batch", "2", "--max-wait-ms", "10")
    log = []  # (client, start, end, outcome)
    lock = threading.Lock()
    started = threading.Event()

    def client(c: int) -> None:
        i = 0
        while True:
            k = (c + i) % NUM_PHOTOS
            t0 = time.time()
            try:
                status, _, body = request(s.port, "POST", "/v1/detect", photos[k][0])
                if status == 200:
                    assert_equal_detections(body, expected[k])
                outcome = status
            except ConnectionRefusedError:
                outcome = "refused"
            except BaseException as e:
                outcome = repr(e)
            with lock:
                log.append((c, t0, time.time(), outcome))
            i += 1
            if i >= 3:
                started.set()
            if outcome != 200:
                return

    threads = [threading.Thread(target=client, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    assert started.wait(300)
    time.sleep(0.05)
    signalled = time.time()
    s.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=300)
    assert s.proc.wait(timeout=120) == 0
    output = s.proc.stdout.read()
    assert "finishing the requests in flight" in output and "stopped" in output
    outcomes = [o for _, _, _, o in log]
    assert all(o in (200, 503, "refused") for o in outcomes), [o for o in outcomes if o not in (200, 503, "refused")]
    in_flight = [o for _, t0, t1, o in log if t0 < signalled < t1]
    assert in_flight and all(o == 200 for o in in_flight), in_flight
