"""System configs and their schema."""
