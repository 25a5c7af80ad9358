"""Prohibited-item detection in X-ray images (``zoo xray detect``) and the X-ray part of ``zoo demo``.

- ``detect``: :func:`~attnzoo.tasks.xray.detect.detect` runs a trained mmdet detector (config file, shipped config or
  detector card + checkpoint) on images: one JSON and one picture per image, one summary line per image; a checkpoint
  that does not fit the config is refused with the zoo's one misfit message;
- ``drawing``: :func:`~attnzoo.tasks.xray.drawing.place_labels` (labels that never overlap) and
  :func:`~attnzoo.tasks.xray.drawing.draw_detections`;
- ``demo``: :func:`~attnzoo.tasks.xray.demo.run_xray_demo`: synthetic PIDray-style set, train / evaluate a small SDANet
  detector with the shipped tools, then ``zoo xray detect`` on held-out bags.

Importing this package imports none of them; importing any of them does not import OpenMMLab (the functions import
it when they run).
"""
