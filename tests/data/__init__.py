"""Tests for the data part of the project."""
