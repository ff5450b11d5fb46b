"""Run the ``bench`` command from a checkout: ``python main.py ...`` behaves exactly like ``bench ...``."""

from bench.cli import main

if __name__ == "__main__":
    main()
