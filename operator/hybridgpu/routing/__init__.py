"""The routing engine: pure functions from (job, policy, snapshot) to a decision.

Nothing here imports kopf, kubernetes or httpx; a test holds that line.
"""
