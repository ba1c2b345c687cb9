"""Tests for the images part of the project."""
