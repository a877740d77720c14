"""Jepsen-style history recording and linearizability checking for the KV store."""
