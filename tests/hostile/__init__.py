"""The hostile-peer suite of issue 6 (docs/hostile.md)."""
