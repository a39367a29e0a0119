"""``python -m app``: a model, live on your webcam, in the browser.

    python -m app                                   # M0 on ONNX Runtime, http://127.0.0.1:7860
    python -m app --model m0 --weights efficientvit_m0.pth      # official weights
    python -m app --model runs/m0-shapes/m0.onnx                # a trained, exported model
    python -m app --model runs/<study>/                         # a search: best, Pareto, M0-M5

The browser streams frames (``--stream-every``) and sends the next one only when the previous
answer is back, so a slow model drops frames instead of building a backlog; one inference
session serves every caller. The page shows the top-5 labels, the model's own time per frame
(timed as ``python -m edge bench`` times a run) and the end-to-end rate with rolling p50/p90,
pickers for the model and the runtime, and where the weights came from; random weights get a
banner. The same classifier is an API event, ``predict`` (image -> labels, probabilities,
times), for ``gradio_client`` and scripts.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.models import OFFICIAL_HINT, RUNTIMES, ModelChoice, available_runtimes, choices_for
from app.predict import Classifier, ClassifierClosed, describe
from app.preprocess import ImageError
from evit.clitools import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    ArgumentParser,
    add_verbose,
    configure_logging,
    epilog,
)

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install '.[app]'"


def import_gradio() -> Any:
    try:
        import gradio as gr
    except ImportError:
        raise RuntimeError(f"the demo needs Gradio: {INSTALL_HINT}") from None
    return gr


class DemoState:
    """The model being served (one session for every caller) and the choices to switch to."""

    def __init__(self, choices: list[ModelChoice], runtime: str, threads: int | None) -> None:
        self.choices = {c.label: c for c in choices}
        self.threads = threads
        self.classifier = Classifier(choices[0], runtime, threads)
        self.switching = threading.Lock()

    def switch(self, label: str, runtime: str) -> str:
        """Serve another model or runtime; on failure the current one stays, and the error is
        returned as a message. Calls in flight finish on the old session before it closes."""
        with self.switching:  # the two pickers are separate events
            current = self.classifier
            if label not in self.choices:
                return f"unknown model {label!r}"
            if label == current.choice.label and runtime == current.runtime_name:
                return ""
            try:
                new = Classifier(self.choices[label], runtime, self.threads)
            except Exception as e:  # any failure is a message; the old model keeps serving
                first = (str(e).splitlines() or [type(e).__name__])[0]
                return f"could not switch to {label} on {runtime}: {first}"
            self.classifier = new
            current.close()  # waits for a call in flight; later ones find it closed
            return f"now serving {label} on {runtime}"

    def header(self) -> str:
        return describe(self.classifier.info, self.classifier.runtime_name)

    def banner(self) -> str:
        info = self.classifier.info
        lines = []
        if info.random_weights:
            lines.append(
                "⚠️ **Random weights: the predictions are meaningless.** Load trained weights, "
                f"e.g. the official ones: `{OFFICIAL_HINT}`"
            )
        lines += [f"⚠️ {warning}" for warning in info.warnings]
        lines += [f"ℹ️ {note}" for note in info.notes]
        return "\n\n".join(lines)

    def classify(self, image: Any) -> tuple[dict[str, float], str, str]:
        """Labels for the UI, the rolling times, and a message (empty when all went well)."""
        classifier = self.classifier
        try:
            classifier, result = self._run(image)
        except ImageError as e:
            return {}, classifier.stats.summary(), f"⚠️ {e}"
        except Exception as e:  # never a traceback in the page or a dead server
            log.exception("inference failed")
            return {}, classifier.stats.summary(), f"⚠️ inference failed: {type(e).__name__}: {e}"
        return result.labels, classifier.stats.summary(), ""

    def _run(self, image: Any) -> tuple[Classifier, Any]:
        """The serving classifier and its prediction; a frame that waited while the model was
        switched runs on the new one."""
        classifier = self.classifier
        try:
            return classifier, classifier(image)
        except ClassifierClosed:
            classifier = self.classifier
            return classifier, classifier(image)

    def predict(self, image: Any) -> dict[str, Any]:
        """The API: labels, probabilities and times, or an ``error``."""
        try:
            return self._run(image)[1].to_dict()
        except ImageError as e:
            return {"error": str(e)}
        except Exception as e:  # a one-line error for the client, the details in the log
            log.exception("inference failed")
            return {"error": f"inference failed: {type(e).__name__}: {e}"}


def example_images(folder: Path | None = None) -> list[str]:
    """A few generated pictures (shapes and textures) to try the demo without a camera."""
    from evit.train.synthetic import draw_image

    folder = folder or Path(tempfile.gettempdir()) / "evit-edge-examples"
    folder.mkdir(parents=True, exist_ok=True)
    import numpy as np

    paths = []
    for i, (shape, pattern) in enumerate(
        [("star", "stripes"), ("heart", "dots"), ("hexagon", "checker")]
    ):
        path = folder / f"{shape}-{pattern}.png"
        if not path.is_file():
            draw_image(shape, pattern, 256, np.random.default_rng(i)).save(path)
        paths.append(str(path))
    return paths


def _file_path(value: Any) -> Any:
    """Gradio hands files over as paths (or objects with a ``path``)."""
    return getattr(value, "path", value) if value is not None else None


def unavailable_note(runtimes: dict[str, str | None]) -> str:
    """One line per runtime this machine lacks, with the reason (not offered as a choice)."""
    lines = [f"- `{r}` unavailable here: {why}" for r, why in runtimes.items() if why is not None]
    return "\n".join(lines)


def build_demo(state: DemoState, stream_every: float = 0.1) -> Any:
    """The Gradio Blocks app around ``state``."""
    gr = import_gradio()
    labels_now = list(state.choices)
    runtimes = available_runtimes()
    with gr.Blocks(title="evit-edge live demo") as demo:
        gr.Markdown("## EfficientViT, live")
        header = gr.Markdown(state.header())
        banner = gr.Markdown(state.banner())
        with gr.Row():
            model_pick = gr.Dropdown(labels_now, value=state.classifier.choice.label, label="model")
            runtime_pick = gr.Radio(
                [r for r, why in runtimes.items() if why is None],
                value=state.classifier.runtime_name,
                label="runtime",
            )
        gr.Markdown(unavailable_note(runtimes), elem_id="unavailable")
        with gr.Row():
            with gr.Column():
                camera = gr.Image(
                    sources=["webcam"],
                    type="numpy",
                    label="camera",
                    webcam_options=gr.WebcamOptions(
                        constraints={"video": {"width": {"ideal": 640}, "height": {"ideal": 480}}}
                    ),
                )
                upload = gr.File(label="or an image file", file_types=["image"], type="filepath")
                gr.Examples(example_images(), inputs=upload, label="examples")
            with gr.Column():
                labels = gr.Label(num_top_classes=5, label="top-5")
                stats = gr.Markdown("no frame yet", elem_id="stats")
                message = gr.Markdown("", elem_id="message")
        api_image = gr.File(visible=False)
        api_result = gr.JSON(visible=False)

        def on_frame(frame: Any) -> tuple[dict[str, float], str, str]:
            return state.classify(frame)

        def on_upload(value: Any) -> tuple[dict[str, float], str, str]:
            if value is None:
                return {}, state.classifier.stats.summary(), ""
            return state.classify(_file_path(value))

        def on_switch(label: str, runtime: str) -> tuple[Any, ...]:
            note = state.switch(label, runtime)
            now = state.classifier  # the pickers show what is served, also after a failure
            return (
                state.header(),
                state.banner(),
                note,
                {},
                gr.update(value=now.choice.label),
                gr.update(value=now.runtime_name),
            )

        camera.stream(
            on_frame,
            inputs=camera,
            outputs=[labels, stats, message],
            stream_every=stream_every,
            concurrency_limit=1,
            api_name="stream",
        )
        upload.change(on_upload, inputs=upload, outputs=[labels, stats, message], api_name=False)
        for picker in (model_pick, runtime_pick):
            picker.change(
                on_switch,
                inputs=[model_pick, runtime_pick],
                outputs=[header, banner, message, labels, model_pick, runtime_pick],
                api_name=False,
            )
        api_image.change(
            lambda value: state.predict(_file_path(value)),
            inputs=api_image,
            outputs=api_result,
            api_name="predict",
        )
    return demo


def check_port(host: str, port: int) -> None:
    """One-line errors for a port out of range or already taken, before any loading."""
    if not 1 <= port <= 65535:
        raise ValueError(f"--port {port}: must be between 1 and 65535")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, port))
    except OSError as e:
        raise ValueError(
            f"--port {port} on {host}: cannot listen there ({e.strerror or e})"
        ) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


EPILOG = epilog(
    [
        "python -m app --model m0 --weights efficientvit_m0.pth",
        "python -m app --model runs/m0-shapes/m0.onnx --port 7861",
    ],
    done="never: the server runs until interrupted",
    bad_input="a one-line error at start-up (a missing or corrupt model, a port in use, "
    "--runtime trt without TensorRT and a GPU)",
    interrupted="the server is stopped",
)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m app", description=__doc__, epilog=EPILOG)
    p.add_argument(
        "--model",
        help="m0..m5 or a config .yaml (exported on the fly), an .onnx or .engine file, or a "
        "search output folder (default m0)",
    )
    p.add_argument("--weights", help="checkpoint for --model (official, timm or evit train)")
    p.add_argument("--runtime", choices=RUNTIMES, default="ort", help="inference runtime (ort)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="runtime CPU threads (default 1, not all usable cores as edge bench and search "
        "measure with: with spinning off, as a server needs, more threads wait on each "
        "other's wake-up; docs/benchmarks.md)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (7860)")
    p.add_argument("--auth", help="user:password required to open the page")
    p.add_argument(
        "--stream-every", type=float, default=0.1, help="seconds between camera frames (0.1)"
    )
    p.add_argument(
        "--max-upload-mb", type=float, default=10.0, help="largest accepted upload (10 MB)"
    )
    add_verbose(p)
    return p


def serve(demo: Any, wait: Callable[[], None] = lambda: time.sleep(0.2), **launch: Any) -> int:
    """Run ``demo`` until Ctrl-C (``wait`` raising KeyboardInterrupt), then close it: 130."""
    demo.launch(prevent_thread_lock=True, **launch)
    try:
        while True:
            wait()
    except KeyboardInterrupt:
        print("interrupted: server stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        demo.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        check_port(args.host, args.port)
        auth = None
        if args.auth is not None:
            user, sep, password = args.auth.partition(":")
            if not (sep and user and password):
                raise ValueError("--auth: give user:password")
            auth = (user, password)
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads {args.threads}: must be >= 1")
        state = DemoState(choices_for(args.model, args.weights), args.runtime, args.threads)
        demo = build_demo(state, args.stream_every)
    except (ValueError, RuntimeError, ImportError, OSError) as e:
        print(f"error: {(str(e).splitlines() or [type(e).__name__])[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # while loading the model
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not _is_loopback(args.host):
        print(
            f"warning: serving on {args.host}, reachable from other machines"
            + ("" if auth else "; consider --auth user:password"),
            file=sys.stderr,
        )
    print(f"serving {state.classifier.choice.label} on http://{args.host}:{args.port}")
    return serve(
        demo,
        server_name=args.host,
        server_port=args.port,
        auth=auth,
        max_file_size=int(args.max_upload_mb * 1024 * 1024),
        show_error=True,
        quiet=True,
    )


if __name__ == "__main__":
    sys.exit(main())
