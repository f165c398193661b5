"""Configuration: the typed schema, typing a composed config, override strings, resolvers.

Imports no torch.
"""
