"""Forgery (AI-generated image) detection as a library: the task behind ``zoo forgery check``.

- ``runs``: a run folder of ``tools/forgery_train.py`` read back as a ready model (:func:`load_run`,
  :class:`ForgeryRun`, :class:`ForgeryRunError`); weights are read and fitted through ``attnzoo.weights``;
- ``check``: P(fake) and a verdict per image from a run (:func:`check_images`), the JSON row ``zoo forgery check
  --json`` prints;
- ``official``: the released UnivFD, NPR and FakeReasoning weights (downloads, sha256 where published).

The models themselves are built by ``attnzoo.heads.forgery`` (``attnzoo.heads.forgery.builders``), which reads no file. Importing this
package imports none of its modules.
"""
