"""Task heads, one task per subpackage: ``heads.xray`` (SDANet, PIDray) and ``heads.forgery`` (FakeReasoning, UnivFD, NPR).

Subpackages that need OpenMMLab or transformers import them lazily, so ``import heads`` works without them.
"""
