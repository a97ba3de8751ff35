"""Where jobs run: in-cluster batch/v1 Jobs beside external network dispatch."""
