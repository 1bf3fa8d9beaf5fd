"""Fixtures for the teacher: placeholder, being written."""
