"""Command-line front ends. Each ``vos.cli.<tool>`` module has a ``main(argv=None)``; ``tools/<tool>.py`` and the
``vos`` console script are thin wrappers around them."""
