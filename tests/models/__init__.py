"""Tests for the models part of the project."""
