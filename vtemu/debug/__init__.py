"""Debugging: exit history, statistics, stepping."""
