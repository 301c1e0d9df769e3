"""The vocabulary every other part shares: names, errors, settings, limits and the small grammars (versions,
placeholders, rates, address policy) the settings are parsed with.
"""
