"""Prototypes of fixes proposed in docs/performance.md, as settings variants of the real app.

Run the server with one (``bench/load.py --settings bench.variants.async_middleware``) to measure
a fix before anyone changes the app. Nothing here is imported by chatsite itself.
"""
