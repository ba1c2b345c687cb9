"""Tests for the text part of the project."""
