"""Task heads, one task per subpackage: ``attnzoo.heads.xray`` (SDANet, PIDray) and ``attnzoo.heads.forgery`` (FakeReasoning, UnivFD, NPR).

Subpackages that need OpenMMLab or transformers import them lazily, so ``import attnzoo.heads`` works without them.
"""

if __name__ != "attnzoo.heads":  # a clone's root on sys.path finds this folder as a top-level package: not ours to claim
    raise ImportError(f"'{__name__}' is a folder of an attnzoo clone, not a package of its own: import attnzoo.heads")

