"""Trio driver for ripp_core — coming with the drivers issue."""
