"""Tests for the pipelines part of the project."""
