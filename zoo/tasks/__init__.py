"""The zoo's library code, one module (or package) per task; ``attnzoo.commands`` only parses arguments and prints.

- ``measure``: the one measuring harness (device sync, timing, peak memory, environment label, Markdown, plots, JSON)
  shared by ``zoo bench`` and tools/benchmark.py (docs/ARCHITECTURE.md, "Measuring").
- ``bench``: ``zoo bench``: params, GFLOPs, throughput and peak memory of zoo models next to timm peers.
- ``export``: ONNX export checked in onnxruntime, and the torch.compile check.
- ``images``: image inputs shared by the image-taking verbs.
- ``demo``: the ``zoo demo`` steps (the zoo table, then ``xray.demo``) and ``wide_console``.
- ``xray``: prohibited-item detection in X-ray images: ``detect`` (``zoo xray detect``), ``drawing``, ``demo``.
- ``forgery``: AI-generated image (forgery) detection.
- ``classification``: ImageNet-style validation, training and prediction.

Importing this package imports none of them (each is loaded when a verb or a caller needs it).
"""
