"""Benchmarks: azjobs against the raw azure-storage-queue SDK and Celery, on one Azurite.

Run by hand with ``python -m benchmarks.run`` (see benchmarks/README.md); never from the tests.
"""
