"""Whole-volume inference and predict's synthesis of T2 files, shared by training, evaluate and predict."""
