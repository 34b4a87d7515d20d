"""The config tree (conf/) as typed dataclasses, and the checks run on a composed config."""
