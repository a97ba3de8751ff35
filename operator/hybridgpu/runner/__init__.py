"""Programs that run inside an in-cluster Job's Pod (``hybridgpu runner ...``).

They use the standard library and httpx only, read their input and write their output as
streams (memory bounded by the longest line, not by the batch), and say by their exit code
whether the output object was written: 0 yes, 1 a failure to reach something, 2 bad input,
75 interrupted by SIGTERM with every finished line saved in the job's checkpoint
(:mod:`.checkpoint`), for the next attempt to resume from.
"""
