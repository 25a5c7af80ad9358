"""Attention ops: tensors in, tensors out. One op per file (bra.py, agent.py, flow.py, slab.py, aggregated_attention.py,
moh.py); tiles.py holds the Triton tile helpers flow and slab share, backend.py the dispatch.

Each op file holds the plain-torch reference (the spec), the Triton kernels, the autograd.Function and one public
function that dispatches through :func:`kernels.backend.choose_backend`. Nothing here imports the rest of attnzoo.
"""
