"""What the demo adds on top of the model: M0 bare, in the app's session, and through the API.

    python -m benchmarks.bench_app

1. The model alone, interleaved (``edge.measure_interleaved``): ONNX Runtime as ``edge bench``
   runs it (spinning on) and as the demo runs it (spinning off), at 1 and 2 threads.
2. Through the demo: the ``predict`` API called by ``gradio_client`` in a loop (one caller), with
   the server's own model time and end-to-end time for the same frames.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()

    import evit
    from edge.export import export_onnx
    from edge.latency import measure_interleaved
    from edge.runtimes import OrtRuntime
    from evit.live import live_copy

    with tempfile.TemporaryDirectory() as tmp:
        onnx = Path(tmp) / "m0.onnx"
        export_onnx(live_copy(evit.create_model("m0")), onnx)
        settings = [(2, True), (2, False), (1, True), (1, False)]
        runtimes = [OrtRuntime(onnx, threads=t, spinning=s) for t, s in settings]
        labels = [f"{t} thread(s), spinning {'on' if s else 'off'}" for t, s in settings]
        bare = measure_interleaved(runtimes, labels=labels, max_seconds=60, max_rounds=40)
        for label, r, ratio in zip(labels, bare.results, [None, *bare.ratios]):
            vs = f", {ratio.ratio:.2f}x [{ratio.ci_low:.2f}, {ratio.ci_high:.2f}]" if ratio else ""
            ci = f"[{r.ci_low_ms:.3f}, {r.ci_high_ms:.3f}]"
            print(f"bare M0, {label}: {r.median_ms:.3f} ms {ci}{vs}")
        for rt in runtimes:
            rt.close()

        from gradio_client import Client, handle_file

        from app.demo import DemoState
        from app.models import choices_for
        from tests.app.conftest import serve

        rows = {}
        frame = Path(tmp) / "frame.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)).save(
            frame
        )
        for threads in (1, 2):
            state = DemoState(choices_for(str(onnx)), "ort", threads)
            demo, url = serve(state)
            client = Client(url, verbose=False)
            for _ in range(10):  # warm-up
                client.predict(handle_file(str(frame)), api_name="/predict")
            api_ms, model_ms, e2e_ms = [], [], []
            for _ in range(args.calls):
                start = time.perf_counter()
                result = client.predict(handle_file(str(frame)), api_name="/predict")
                api_ms.append((time.perf_counter() - start) * 1e3)
                model_ms.append(result["model_ms"])
                e2e_ms.append(result["end_to_end_ms"])
            demo.close()
            rows[threads] = {
                "api_p50_ms": float(np.median(api_ms)),
                "api_p90_ms": float(np.percentile(api_ms, 90)),
                "server_model_p50_ms": float(np.median(model_ms)),
                "server_end_to_end_p50_ms": float(np.median(e2e_ms)),
            }
            r = rows[threads]
            print(
                f"app, {threads} thread(s): model {r['server_model_p50_ms']:.3f} ms, server end "
                f"to end {r['server_end_to_end_p50_ms']:.2f} ms, API round trip p50 "
                f"{r['api_p50_ms']:.1f} ms, p90 {r['api_p90_ms']:.1f} ms (640x480 PNG upload)"
            )
    save(
        "app",
        {
            "bare": bare.to_dict(),
            "bare_labels": labels,
            "app": rows,
        },
    )


if __name__ == "__main__":
    main()
