"""Types each method's own settings: Hydra imports this package when it scans its plugins,
before it composes any config, and the schemas of src/model/methods enter its ConfigStore."""

from src.model.methods import register_schemas

register_schemas()
