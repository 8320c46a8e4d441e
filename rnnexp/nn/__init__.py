"""Recurrent encoders: cells x direction x depth on a chosen backend."""
