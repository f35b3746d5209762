import sys

try:  # Ctrl-C while the libraries are still importing ends as quietly as it does later
    from .cli import main
except KeyboardInterrupt:
    if sys.stderr is not None:
        print("interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
