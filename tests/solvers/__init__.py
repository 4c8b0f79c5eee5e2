"""Tests of structattn.solvers."""
