"""Darkroom: background image processing with live progress."""
