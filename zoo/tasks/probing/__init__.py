"""``zoo probe`` as a library: which frozen backbone fits a folder of images.

- ``features``: the token map of a backbone and its extraction over a split (``ProbeError``);
- ``cache``: the on-disk feature cache, keyed by model, weights, input size, the folder's contents and versions
  (one writer per entry: a lock);
- ``sharding``: the extraction sharded across torchrun processes into the one cache entry;
- ``training``: the probes' recipes (linear, attentive, EP, MP) on cached features, and k-NN;
- ``leaderboard``: :func:`run_probe` (every model x method) and the Markdown / JSON / plot outputs.
The probes themselves are ``attnzoo.heads.probing``.
"""

from .cache import FeatureCache, default_cache_dir, folder_fingerprint
from .features import Features, ProbeError, extract_features, token_map
from .training import METHODS, ProbeResult, knn_classify, train_probe

__all__ = ["METHODS", "FeatureCache", "Features", "ProbeError", "ProbeResult", "default_cache_dir",
           "extract_features", "folder_fingerprint", "knn_classify", "token_map", "train_probe"]
