"""Shipped dataset profiles (``causalvis analyze --profile NAME``): TOML data files."""
