"""Attention ops: tensors in, tensors out. One op per file (bra.py, agent.py, flow.py, slab.py, aggregated_attention.py,
moh.py); tiles.py holds the Triton tile helpers flow and slab share, backend.py the dispatch, launch.py the GPU target a launch is compiled for.

Each op file holds the plain-torch reference (the spec), the Triton kernels, the autograd.Function, the
``attnzoo::`` torch.library op (:func:`attnzoo.kernels.backend.kernel_op`: its kernel picks the path through
:func:`attnzoo.kernels.backend.choose_backend`) and one public function that calls it. Nothing here imports the rest
of attnzoo.
"""

if __name__ != "attnzoo.kernels":
    # This folder was found as a top-level ``kernels`` because an attnzoo clone's root is on sys.path (``python -m`` or
    # a REPL started there). The name belongs to Hugging Face's ``kernels`` (transformers imports it): hand the import
    # over to the installed one, so the clone never shadows it; without one, say what to import instead.
    import importlib.machinery as _machinery
    import importlib.util as _util
    import os as _os
    import sys as _sys

    _clone_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    _elsewhere = [p for p in _sys.path if _os.path.abspath(p or _os.curdir) != _clone_root]
    _spec = _machinery.PathFinder.find_spec(__name__, _elsewhere)
    if _spec is None:
        raise ImportError(f"'{__name__}' is attnzoo's kernels folder here (found because {_clone_root} is on sys.path); "
                          "import attnzoo.kernels")
    _module = _util.module_from_spec(_spec)
    _sys.modules[__name__] = _module  # the import statement returns what sys.modules holds once this file ends
    _spec.loader.exec_module(_module)
