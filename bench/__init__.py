"""Load benchmark of chatsite (not part of the test suite): run bench/load.py."""
