"""Peewee model declarations, one module per domain.

Each domain module has a factory (``build_<domain>_models(database)``) that declares fresh model
classes bound to the given ``DatabaseProxy``, so every store owns its own classes (peewee binding
is process-global per class).  Declarations only: queries live in :mod:`repository`.
"""
