"""The worker process: runs one endpoint's code (an ONNX model, a Python function) for the
supervisor in the front process. Nothing here is imported by the front process but
:mod:`node.worker.protocol`, the framing both sides share."""
