"""flows: Prefect 3 flows and the ``gmm`` command line, thin layers over ``pipeline``."""
