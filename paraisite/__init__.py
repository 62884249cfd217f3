"""paraisite: transfer learning of material properties (lattice thermal conductivity) from small data."""

__version__ = "0.1.0"
