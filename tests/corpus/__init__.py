"""The bad-input corpus of tests/test_bad_input_corpus.py: its harness and its cases by area."""
