"""Development tools shared by the test suite and the benchmarks; never used by the site.

``fake_upstream``: a real, misbehaving OpenAI-compatible HTTP server on loopback.
"""
