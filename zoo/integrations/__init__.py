"""Bridges from the :mod:`attnzoo.layers` attentions to other frameworks' model definitions.

* :mod:`attnzoo.integrations.forms`: the form every framework plugs a layer in with (``x + gamma * layer(x)`` with
  ``gamma`` starting at 0, or the gate itself for ELA), shared by the OpenMMLab plug-ins (:mod:`attnzoo.openmmlab.plugins`)
  and the Ultralytics bridge; it imports no framework;
* :mod:`attnzoo.integrations.ultralytics`: ``register()`` makes the layers usable by name in Ultralytics YOLO model YAMLs
  (the ``yolo`` extra: ``pip install 'attnzoo[yolo]'``; Ultralytics is AGPL-3.0 and only that module imports it).
* :mod:`attnzoo.integrations.transformers`: the zoo's backbones in Hugging Face transformers' RT-DETR, Mask2Former and
  UperNet (``backbone_config``, ``rt_detr_config``, ...; the ``hf`` extra); importing it registers the model type
  ``attnzoo_backbone`` that ``from_pretrained`` of such a model needs.

``import attnzoo`` imports none of these; ``python -m attnzoo.integrations`` checks that the installed frameworks are ones the
bridges support (one line each).
"""
