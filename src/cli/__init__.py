"""What every command does around its work: the one error boundary (`boundary.py`), Hydra's
commands wrapped (`hydra_commands.py`: overrides, signals, the composed config checked, a
console that keeps passwords off it), and the checks of a composed config, run before any data
is read, any weight loads or any run exists (`config_checks.py`)."""
