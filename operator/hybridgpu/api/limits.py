"""What one InferenceJob may ask of the operator: the bounds every tenant gets.

One job author must not be able to exhaust the operator's memory (the chart's default limit
is 512 Mi, shared by every job of the cluster) or wedge its writes, so each part of a job
that the operator holds in memory, copies into a Job, an SDL or a request body is bounded:

* the schema bounds below are in the generated CRD, so the API server refuses a job beyond
  them and names the field (``spec.input.requests: Invalid value ... must be less than or
  equal to 1000000``);
* the total size of the spec and the size of inline requests cannot be expressed as schema
  bounds; the operator checks them when it reads the job and fails it with a message that
  names the field;
* requests taken from a ConfigMap are read only up to ``MAX_CONFIGMAP_INPUT_BYTES`` and
  ``MAX_CONFIGMAP_ITEMS`` (YAML aliases refused), see ``networks.requests.load_request_items``;
* synthetic requests (``spec.input.loadTest``) are built one at a time as they are sent, so
  a large count costs no memory;
* a ``spec.input.source`` object is streamed line by line, bounded in size by the policy's
  ``maxInputSize`` and in requests by ``MAX_REQUESTS`` (docs/results.md).

An admin who needs other bounds changes these constants and runs ``make crds`` (the CRDs and
the chart's copies are generated from the models that use them).
"""

from __future__ import annotations

KIB = 1024

MAX_REQUESTS = 1_000_000
"""spec.input.requests."""
MAX_INPUT_TOKENS = 131_072
"""spec.input.inputTokens: prompt tokens per request (a 128k context)."""
MAX_OUTPUT_TOKENS = 131_072
"""spec.input.outputTokens: generated tokens per request."""
MAX_INLINE_ITEMS = 100
"""spec.input.inline: request objects written into the job itself."""
MAX_INLINE_ITEM_PROPERTIES = 64
"""Top-level fields of one inline request object."""
MAX_INLINE_BYTES = 64 * KIB
"""spec.input.inline as JSON; larger batches belong in a ConfigMap."""
MAX_CONFIGMAP_INPUT_BYTES = 1024 * KIB
"""The ConfigMap value read for spec.input.configMapRef (the API server's own ConfigMap cap)."""
MAX_CONFIGMAP_ITEMS = 100_000
"""Request objects read from a ConfigMap."""
MAX_COMMAND_ITEMS = 32
"""spec.command entries."""
MAX_ARGS_ITEMS = 128
"""spec.args entries."""
MAX_ARG_CHARS = 4096
"""One entry of spec.command or spec.args."""
MAX_ENV_ITEMS = 64
"""spec.env entries."""
MAX_ENV_NAME_CHARS = 256
MAX_ENV_VALUE_CHARS = 8192
"""One spec.env value."""
MAX_REGIONS = 32
"""spec.regions entries."""
MAX_ESTIMATED_DURATION_HOURS = 8760
"""spec.estimatedDuration and spec.startWithin: one year."""
MAX_SPEC_BYTES = 128 * KIB
"""The whole spec as JSON. Kopf keeps a copy of the spec in an annotation, and the API server
caps all annotations of an object at 256 KiB together."""
MAX_OBJECT_URL_CHARS = 1024
"""spec.input.source and spec.output.uri: S3 keys are at most 1024 bytes."""
