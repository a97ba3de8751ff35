"""Test-side pieces that run in-cluster Jobs for real: a node agent, stand-in runtimes, an
object server. See tests/incluster/agent.py."""
