"""``python -m app --model best.onnx``: the chosen model, live on a webcam stream.

The browser streams frames (``stream_every``) and skips a frame while the previous one is being
processed, so a slow model drops frames instead of building a backlog. The same function is
also exposed as a plain ``predict`` API event, which ``gradio_client`` can call (it cannot drive
a stream).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from app.predict import Classifier

INSTALL_HINT = "pip install '.[app]'"


def import_gradio() -> Any:
    try:
        import gradio as gr
    except ImportError:
        raise RuntimeError(f"the demo needs Gradio: {INSTALL_HINT}") from None
    return gr


def make_predict(classifier: Classifier) -> Callable[[Any], tuple[dict[str, float], str]]:
    """The function behind both events: frame -> (top-k labels, latency text)."""

    def predict(frame: Any) -> tuple[dict[str, float], str]:
        if frame is None:
            return {}, "waiting for the camera"
        result = classifier(frame)
        return result.labels, f"{classifier.name}: {result.latency_ms:.1f} ms per frame"

    return predict


def build_demo(classifier: Classifier, stream_every: float = 0.1) -> Any:
    """The Gradio Blocks app for ``classifier``."""
    gr = import_gradio()
    predict = make_predict(classifier)
    with gr.Blocks(title="evit-edge live demo") as demo:
        gr.Markdown(f"## {classifier.name} on your webcam")
        with gr.Row():
            camera = gr.Image(
                sources=["webcam"],
                type="numpy",
                label="camera",
                webcam_options=gr.WebcamOptions(
                    constraints={"video": {"width": {"ideal": 640}, "height": {"ideal": 480}}}
                ),
            )
            with gr.Column():
                labels = gr.Label(num_top_classes=classifier.top_k, label="prediction")
                speed = gr.Textbox(label="latency", interactive=False)
        camera.stream(
            predict,
            inputs=camera,
            outputs=[labels, speed],
            stream_every=stream_every,
            concurrency_limit=1,
            api_name="stream",  # "predict" is the plain event below, for gradio_client
        )
        upload = gr.Image(type="numpy", label="or a still image", visible=False)
        upload.change(predict, inputs=upload, outputs=[labels, speed], api_name="predict")
    return demo


def check_port(host: str, port: int) -> None:
    """One-line errors for a port out of range or already taken, before any loading."""
    import socket

    if not 1 <= port <= 65535:
        raise ValueError(f"--port {port}: must be between 1 and 65535")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, port))
    except OSError as e:
        raise ValueError(
            f"--port {port} on {host}: cannot listen there ({e.strerror or e})"
        ) from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m app",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", required=True, help=".onnx written by 'edge export' or by the search (best.onnx)"
    )
    p.add_argument("--threads", type=int, help="ONNX Runtime threads (default: all cores)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default local)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--stream-every",
        type=float,
        default=0.1,
        help="seconds between streamed frames (default 0.1)",
    )
    args = p.parse_args(argv)
    try:
        check_port(args.host, args.port)
        classifier = Classifier(args.model, threads=args.threads)
        demo = build_demo(classifier, args.stream_every)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    demo.launch(server_name=args.host, server_port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
