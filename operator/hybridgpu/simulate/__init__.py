"""Replays workloads through the routing engine with a virtual clock."""
