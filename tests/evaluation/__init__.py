"""Tests for the evaluation part of the project."""
