"""`rnnexp-bench` (cli.py): the sections (sections.py) measure with harness.py's one step timer."""
