"""The robustness runner's scenarios (issue 12), one module each; bench/robustness.py runs them.

Each scenario module has ``NAME``, ``add_arguments(parser)``, ``set_defaults(args)`` (the quick
or full size of whatever was not given) and ``run(env, args) -> Row``.
"""
