"""Command line: ``python -m fastnorm COMMAND`` (also installed as ``fastnorm``).

Commands:
  bench   time fastnorm's ops against NumPy, PyTorch and ONNX Runtime (fastnorm.bench)
  demo    train an MLP on scikit-learn's digits, save, fold BatchNorm, serve (fastnorm.demo)
"""
import argparse
import sys


def main(argv=None):
    """Parse ``argv`` (default: sys.argv[1:]), run the command; returns the exit status."""
    from . import bench, demo

    parser = argparse.ArgumentParser(prog="python -m fastnorm", description="fastnorm's command line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench.add_arguments(commands.add_parser(
        "bench", help="time fastnorm's ops against NumPy, PyTorch and ONNX Runtime",
        description=bench.DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter))
    demo.add_arguments(commands.add_parser(
        "demo", help="train an MLP on scikit-learn's digits, save, fold BatchNorm, serve",
        description=demo.DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    return demo.main(args) if args.command == "demo" else bench.main(args)


if __name__ == "__main__":
    sys.exit(main())
