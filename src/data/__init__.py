"""Data (conf/data): built-in sets and your files as train / valid / test frames; mixing;
label noise; the seeded random streams."""
