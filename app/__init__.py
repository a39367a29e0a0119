"""app: a thin Gradio view that runs a chosen model live on a webcam stream.

``app.predict`` holds the part that needs no UI (frame -> top-k labels through ONNX Runtime);
``app.demo`` builds the Gradio interface around it (Gradio is imported only there).
"""
