"""Tests for the cli part of the project."""
