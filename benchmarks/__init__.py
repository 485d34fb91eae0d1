"""Speed and quality benchmarks: `python -m benchmarks.<name> --help`. Each prints its headline last, as name=value."""
