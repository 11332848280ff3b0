"""Unit tests of the benchmark tools that need no emulator (the capacity model)."""
