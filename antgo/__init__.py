"""antgo."""
