"""Pure polars transforms: no I/O, no models."""
