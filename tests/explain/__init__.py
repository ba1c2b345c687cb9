"""Tests for the explain part of the project."""
