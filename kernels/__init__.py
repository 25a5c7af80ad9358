"""Attention ops: tensors in, tensors out. One op per file (bra.py, agent.py, flow.py).

Each op file holds the plain-torch reference (the spec), the Triton kernels, the autograd.Function and one public
function that dispatches through :func:`kernels.backend.choose_backend`. Nothing here imports the rest of attnzoo.
"""
