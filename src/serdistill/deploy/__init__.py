"""The deploy layer: the model bundle, ONNX export, the HTTP service and its page.

See docs/architecture.md."""
