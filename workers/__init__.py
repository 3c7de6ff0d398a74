"""Dramatiq workers: the broker, the actors and the pure image pipeline."""
