"""Legacy namespace of the design document's dataset base class."""
