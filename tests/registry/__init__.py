"""Tests of the artifact registry (ragindex.registry)."""
