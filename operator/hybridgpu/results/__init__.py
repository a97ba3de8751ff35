"""Results: where an InferenceJob's requests are read from and its outputs are written to.

The object store is the job's checkpoint: what is in it is done (see :mod:`.output`).
``urls`` is pure; ``store`` wraps the object-store client (obstore); ``layout`` names the
keys of one job; ``reader`` streams and checks input JSONL; ``output`` writes parts and the
final output object; ``formats`` builds output lines.
"""
