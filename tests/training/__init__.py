"""Tests for the training part of the project."""
